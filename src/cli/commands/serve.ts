import type { Command } from '../command.js';

const command: Command = {
  name: 'serve',
  summary: 'run the kiln service',
  async run() {
    const { serveForever } = await import('../../server/main.js');
    return serveForever();
  },
};
export default command;
