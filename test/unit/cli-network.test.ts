/** `kiln sandbox create --network …` flag parsing and the network trail's table (src/cli/network.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { KilnClient, NetworkEvent } from '../../sdk/src/index.js';
import { parseFlags, UsageError } from '../../src/cli/command.js';
import { eventRows, networkOption, showNetwork, summaryLines, takeRepeated } from '../../src/cli/network.js';

/** The create command's own parsing of its argv: what reaches the create body's `network`. */
function parse(argv: string[]) {
  const allow = takeRepeated(argv, 'allow');
  const { flags, positional } = parseFlags(allow.rest, { string: ['backend', 'network', 'bandwidth-mbit'], boolean: ['learn'] });
  return { positional, network: networkOption(flags, allow.values) };
}

function usage(argv: string[], message: RegExp): void {
  assert.throws(
    () => parse(argv),
    (e: unknown) => e instanceof UsageError && message.test(e.message),
  );
}

describe('cli: sandbox create --network flags', () => {
  it('no network flag: no network in the body (the service default)', () => {
    assert.deepEqual(parse(['python']), { positional: ['python'], network: undefined });
  });

  it('allowlist with repeated --allow (both spellings), --learn and --bandwidth-mbit', () => {
    const r = parse([
      'python',
      '--network',
      'allowlist',
      '--allow',
      'pypi.org',
      '--allow=*.pythonhosted.org',
      '--backend',
      'qemu',
      '--allow',
      '198.51.100.0/24:443',
      '--learn',
      '--bandwidth-mbit',
      '50',
    ]);
    assert.deepEqual(r.positional, ['python']);
    assert.deepEqual(r.network, { policy: 'allowlist', allow: ['pypi.org', '*.pythonhosted.org', '198.51.100.0/24:443'], learn: true, bandwidthMbit: 50 });
  });

  it('none and open', () => {
    assert.deepEqual(parse(['python', '--network', 'none']).network, { policy: 'none' });
    assert.deepEqual(parse(['python', '--network=open', '--bandwidth-mbit=0']).network, { policy: 'open', bandwidthMbit: 0 });
  });

  it('--allow after -- is the command, not a flag', () => {
    assert.deepEqual(takeRepeated(['a', '--', '--allow', 'x'], 'allow'), { values: [], rest: ['a', '--', '--allow', 'x'] });
  });

  it('clear errors for unknown policies, misplaced or missing values', () => {
    usage(['python', '--network', 'everything'], /--network everything: use one of none, allowlist, open/);
    usage(['python', '--allow', 'pypi.org'], /need --network allowlist/);
    usage(['python', '--learn'], /need --network allowlist/);
    usage(['python', '--network', 'open', '--allow', 'pypi.org'], /only apply to --network allowlist \(not open\)/);
    usage(['python', '--network', 'none', '--learn'], /only apply to --network allowlist \(not none\)/);
    usage(['python', '--network', 'allowlist', '--allow'], /--allow needs a value/);
    usage(['python', '--network', 'allowlist', '--allow', ' '], /--allow needs an entry/);
    usage(['python', '--network', 'open', '--bandwidth-mbit', 'fast'], /--bandwidth-mbit fast: a whole number/);
    usage(['python', '--network', 'open', '--bandwidth-mbit', '-5'], /--bandwidth-mbit -5/);
    usage(['python', '--network', 'none', '--bandwidth-mbit', '5'], /does not apply to --network none/);
    usage(['python', '--network'], /--network needs a value/);
  });
});

describe('cli: sandbox network output', () => {
  const events = [
    { seq: 1, at: '2026-12-04T19:00:00.123Z', kind: 'dns' as const, verdict: 'allowed' as const, name: 'pypi.org' },
    { seq: 2, at: '2026-12-04T19:00:01.000Z', kind: 'connection' as const, verdict: 'refused' as const, address: '198.18.1.12', port: 80, protocol: 'tcp', reason: 'not in the allowlist' },
    { seq: 3, at: '2026-12-04T19:00:02.000Z', kind: 'connection' as const, verdict: 'learned' as const, name: 'api.example.org', address: '192.0.2.4' },
  ];

  it('one row per event: time, kind, verdict (refused in capitals), name, address:port, reason', () => {
    assert.deepEqual(eventRows(events), [
      ['TIME', 'KIND', 'VERDICT', 'NAME', 'ADDRESS', 'REASON'],
      ['2026-12-04 19:00:00Z', 'dns', 'allowed', 'pypi.org', '', ''],
      ['2026-12-04 19:00:01Z', 'connection', 'REFUSED', '', '198.18.1.12:80', 'not in the allowlist'],
      ['2026-12-04 19:00:02Z', 'connection', 'learned', 'api.example.org', '192.0.2.4', ''],
    ]);
    assert.equal(eventRows(events, false).length, 3);
  });

  it('the counters and the proposal, ready to paste as create flags', () => {
    const lines = summaryLines({ policy: 'allowlist', events, counters: { bytesOut: 10, bytesIn: 20, refused: 1 }, proposal: { policy: 'allowlist', allow: ['pypi.org', '*.example.org'] } });
    assert.deepEqual(lines, [
      'policy allowlist: 10 bytes out, 20 bytes in, 1 refused',
      'proposed allowlist: pypi.org *.example.org',
      "  kiln sandbox create <pack> --network allowlist --allow 'pypi.org' --allow '*.example.org'",
    ]);
  });
});

describe('cli: sandbox network --follow', () => {
  it('polls with after=<last seq> and prints only new rows, the header once', async (t) => {
    const all: NetworkEvent[] = [1, 2, 3].map((seq) => ({ seq, at: `2026-12-04T19:00:0${seq}.000Z`, kind: 'dns', verdict: seq === 2 ? 'refused' : 'allowed', name: `h${seq}.example` }));
    const afters: Array<number | undefined> = [];
    const stop = new AbortController();
    const fake = {
      sandboxes: {
        async networkEvents(_id: string, o: { after?: number }) {
          afters.push(o.after);
          // The first poll sees two events, the second a third, the third nothing new: then stop.
          const upTo = afters.length === 1 ? 2 : 3;
          if (afters.length === 3) stop.abort();
          return {
            policy: 'allowlist',
            events: all.filter((e) => e.seq > (o.after ?? 0) && e.seq <= upTo),
            counters: { bytesOut: 0, bytesIn: 0, refused: 1 },
            proposal: { policy: 'allowlist', allow: [] },
          };
        },
      },
    } as unknown as KilnClient;
    const printed: string[] = [];
    t.mock.method(console, 'log', (s: string) => printed.push(s));
    assert.equal(await showNetwork(fake, 'sb-1', { follow: true, json: false, intervalMs: 5, signal: stop.signal }), 0);
    assert.deepEqual(afters, [undefined, 2, 3]);
    const lines = printed.join('\n').split('\n');
    assert.equal(lines.filter((l) => l.startsWith('TIME')).length, 1);
    assert.deepEqual(lines.map((l) => /h\d\.example/.exec(l)?.[0]).filter(Boolean), ['h1.example', 'h2.example', 'h3.example']);
    assert.match(lines.find((l) => l.includes('h2.example'))!, /REFUSED/);
  });
});
