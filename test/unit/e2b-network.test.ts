/** E2B's egress settings (allow_internet_access, network.allowOut/denyOut) as kiln network policies. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { e2bNetwork } from '../../src/server/routes/e2b-api.js';

it('maps E2B egress settings to kiln network policies', () => {
  assert.equal(e2bNetwork({}), undefined);
  assert.deepEqual(e2bNetwork({ allow_internet_access: true }), { policy: 'open' });
  assert.deepEqual(e2bNetwork({ allow_internet_access: false }), { policy: 'none' });
  assert.deepEqual(e2bNetwork({ network: { denyOut: ['0.0.0.0/0'] } }), { policy: 'none' });
  assert.deepEqual(e2bNetwork({ network: { allowOut: ['pypi.org', '8.8.8.8/32'], denyOut: ['0.0.0.0/0'] } }), { policy: 'allowlist', allow: ['pypi.org', '8.8.8.8/32'] });
  assert.throws(
    () => e2bNetwork({ network: { denyOut: ['10.0.0.0/8'] } }),
    (e: Error & { code?: string }) => e.code === 'UNSUPPORTED_OPTION' && /allowOut/.test(e.message),
  );
});
