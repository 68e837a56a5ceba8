/**
 * A namespace sandbox sees as many CPUs as its limit (#15): the cpuset the backend puts it in,
 * the agent's affinity and its /sys/devices/system/cpu, read the way each runtime reads them.
 * Real bwrap, real packs.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { detectCgroupLayout } from '../../src/core/cgroups.js';
import { allowedCpus, formatCpuList, parseCpuList } from '../../src/core/cpu-sets.js';
import { cgroupNameFor } from '../../src/server/backends.js';
import { startTestServer, type TestServer, withSandbox } from '../parity/fixture.js';

const hostCpus = allowedCpus();

describe('visible CPUs (namespace)', { skip: process.getuid?.() === 0 ? undefined : 'needs root (namespace backend)', timeout: 5 * 60_000 }, () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ KILN_MAX_CPUS: String(hostCpus.length) });
  });
  after(async () => {
    await t?.close();
  });

  const exec = async (id: string, script: string) => {
    const r = await t.client.sandboxes.exec(id, { cmd: ['bash', '-ec', script], cwd: '/workspace', timeoutMs: 120_000 });
    assert.equal(r.exitCode, 0, `${r.stdout}\n${r.stderr}`);
    return r.stdout.trim().split('\n');
  };
  const cpuListOf = async (id: string) => parseCpuList(String((await t.client.sandboxes.get(id)).details.cpuList));

  for (const [cpus, want] of [
    [1, 1],
    [0.5, 1],
    [hostCpus.length, hostCpus.length],
  ] as const) {
    it(`cpus ${cpus}: nproc, Python's cpu_count and affinity, sysconf, /proc/self/status, /sys and /proc/cpuinfo all say ${want}`, async () => {
      await withSandbox(t.client, { pack: 'python', cpus }, async (id) => {
        const list = await cpuListOf(id);
        assert.equal(list.length, want);
        const out = await exec(
          id,
          [
            'nproc',
            'python3 -c "import os; print(os.cpu_count()); print(len(os.sched_getaffinity(0)))"',
            'getconf _NPROCESSORS_ONLN',
            'getconf _NPROCESSORS_CONF',
            'grep Cpus_allowed_list /proc/self/status | cut -f2',
            'cat /sys/devices/system/cpu/online',
            'grep -c ^processor /proc/cpuinfo',
            'grep ^processor /proc/cpuinfo | cut -d: -f2 | tr -d " " | paste -sd,',
            // Neither view can be changed from inside.
            '(echo 0-63 > /sys/devices/system/cpu/online || touch /sys/x || echo x >> /proc/cpuinfo) 2>/dev/null || echo read-only',
          ].join('\n'),
        );
        const n = String(want);
        assert.deepEqual(out, [n, n, n, n, n, formatCpuList(list), formatCpuList(list), n, list.join(','), 'read-only']);
      });
    });
  }

  it("Go's runtime.NumCPU and GOMAXPROCS follow the limit", async () => {
    await withSandbox(t.client, { pack: 'go', cpus: 1 }, async (id) => {
      await t.client.sandboxes.writeFile(id, '/workspace/main.go', 'package main\nimport ("fmt"; "runtime")\nfunc main() { fmt.Println(runtime.NumCPU(), runtime.GOMAXPROCS(0)) }\n');
      assert.deepEqual(await exec(id, 'go run main.go'), ['1 1']);
    });
  });

  it("Node's availableParallelism follows the limit", async () => {
    await withSandbox(t.client, { pack: 'node', cpus: 1 }, async (id) => {
      assert.deepEqual(await exec(id, 'node -p "require(\'os\').availableParallelism()"'), ['1']);
    });
  });

  it('one-CPU sandboxes alive together get different CPUs', { skip: hostCpus.length < 2 ? 'one CPU only' : undefined }, async () => {
    await withSandbox(t.client, { pack: 'shell', cpus: 1 }, async (a) => {
      await withSandbox(t.client, { pack: 'shell', cpus: 1 }, async (b) => {
        const [ca, cb] = [await cpuListOf(a), await cpuListOf(b)];
        assert.equal(ca.length, 1);
        assert.notDeepEqual(ca, cb);
        // The cgroup says so too, not just the agent.
        const cpuset = detectCgroupLayout(cgroupNameFor(t.runDir)).parents.cpuset;
        if (cpuset) assert.equal((await readFile(join(cpuset, a, 'cpuset.cpus'), 'utf8')).trim(), formatCpuList(ca));
      });
    });
  });

  it('a CPU-bound run with more threads than the limit is not throttled period after period (it is with every host CPU)', async (tc) => {
    await withSandbox(t.client, { pack: 'python', cpus: 1 }, async (id) => {
      const layout = detectCgroupLayout(cgroupNameFor(t.runDir));
      const stat = async () => {
        const text = await readFile(join(layout.parents.cpu!, id, 'cpu.stat'), 'utf8');
        const n = (k: string) => Number(new RegExp(`^${k} (\\d+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
        return { periods: n('nr_periods'), throttled: n('nr_throttled') };
      };
      // Four busy loops for 2 s, on the CPUs the affinity allows.
      const burn = async (cpus: string) => {
        const before = await stat();
        await exec(
          id,
          `python3 -c 'import os; os.sched_setaffinity(0, {${cpus}}); os.execvp("bash", ["bash", "-c", "for i in 1 2 3 4; do timeout 2 bash -c \\"while :; do :; done\\" & done; wait || true"])'`,
        );
        const after = await stat();
        return { periods: after.periods - before.periods, throttled: after.throttled - before.throttled };
      };
      const own = await burn((await cpuListOf(id)).join(','));
      tc.diagnostic(`its own CPU: throttled in ${own.throttled} of ${own.periods} periods`);
      assert.ok(own.periods >= 10, `${own.periods} periods`);
      assert.ok(own.throttled <= own.periods * 0.1, `throttled in ${own.throttled} of ${own.periods} periods`);
      if (!layout.parents.cpuset || hostCpus.length < 2) return;
      // What a quota alone did before: the same loops on every host CPU use up the quota early in each period.
      await writeFile(join(layout.parents.cpuset, id, 'cpuset.cpus'), formatCpuList(hostCpus));
      const wide = await burn(hostCpus.join(','));
      tc.diagnostic(`every host CPU: throttled in ${wide.throttled} of ${wide.periods} periods`);
      assert.ok(wide.throttled > wide.periods * 0.3, `throttled in ${wide.throttled} of ${wide.periods} periods`);
    });
  });
});
