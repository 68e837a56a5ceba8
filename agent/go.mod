module kiln/agent

go 1.19
