/** The port link tokens and cookies (src/server/port-links.ts), with a clock of the test's own. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cookieValues, PortLinks, withoutLinkCookie } from '../../src/server/port-links.js';
import { splitProxyUrl } from '../../src/server/routes/proxy-headers.js';

describe('server/port-links', () => {
  it('a token opens its own sandbox and port until it expires, and nothing else', () => {
    let now = 1_800_000_000_000;
    const links = new PortLinks(() => now);
    const { token, expiresAt } = links.issue('sb-aaaa', 8000, 60);
    assert.equal(expiresAt.getTime(), now + 60_000);
    assert.match(token, /^\d+\.[A-Za-z0-9_-]{43}$/);
    assert.equal(links.check(token, 'sb-aaaa', 8000), 'ok');
    assert.equal(links.check(token, 'sb-aaaa', 8001), 'invalid');
    assert.equal(links.check(token, 'sb-aaab', 8000), 'invalid');
    const [exp, mac] = token.split('.') as [string, string];
    assert.equal(links.check(`${Number(exp) + 3600}.${mac}`, 'sb-aaaa', 8000), 'invalid', 'a later expiry breaks the signature');
    assert.equal(links.check(`${exp}.${mac.slice(0, -1)}${mac.endsWith('A') ? 'B' : 'A'}`, 'sb-aaaa', 8000), 'invalid');
    for (const junk of ['', '.', 'abc', `${exp}.`, `${exp}.${mac}x`, `-1.${mac}`]) assert.equal(links.check(junk, 'sb-aaaa', 8000), 'invalid', junk);
    assert.equal(new PortLinks(() => now).check(token, 'sb-aaaa', 8000), 'invalid', "another service start's secret");
    now += 59_999;
    assert.equal(links.check(token, 'sb-aaaa', 8000), 'ok');
    now += 1;
    assert.equal(links.check(token, 'sb-aaaa', 8000), 'expired');
  });

  it("kiln's cookie and query parameter are taken out of what the sandbox sees", () => {
    assert.deepEqual(cookieValues('a=1; kiln_port_link=x; kiln_port_link=y; kiln_port_link2=z', 'kiln_port_link'), ['x', 'y']);
    assert.equal(withoutLinkCookie('a=1; kiln_port_link=x;b=2'), 'a=1; b=2');
    assert.equal(withoutLinkCookie('kiln_port_link=x'), undefined);
    assert.equal(withoutLinkCookie(['a=1', 'kiln_port_link=x']), 'a=1');
    assert.deepEqual(splitProxyUrl('/v1/sandboxes/sb-1/ports/80/p?x=1&kiln_link=1.abc&y=2', false), { prefix: '/v1/sandboxes/sb-1/ports/80', path: '/p?x=1&y=2' });
    assert.deepEqual(splitProxyUrl('/v1/sandboxes/sb-1/ports/80/?kiln_link=1.abc&access_token=t', true), { prefix: '/v1/sandboxes/sb-1/ports/80', path: '/' });
    assert.deepEqual(splitProxyUrl('/v1/sandboxes/sb-1/ports/80/?access_token=t', false), { prefix: '/v1/sandboxes/sb-1/ports/80', path: '/?access_token=t' });
  });
});
