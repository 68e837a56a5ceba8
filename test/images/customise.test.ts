import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { refuseEmptyPasswords } from '../../src/images/customise.js';

describe('image customisation', () => {
  it('drops nullok from PAM, so an empty password never logs in (Debian common-auth has it)', async () => {
    const root = await mkdtemp(join(tmpdir(), 'kiln-pam-'));
    try {
      await mkdir(join(root, 'etc/pam.d'), { recursive: true });
      // Debian 12's common-auth line, plus the _secure variant older releases used.
      await writeFile(join(root, 'etc/pam.d/common-auth'), 'auth\t[success=1 default=ignore]\tpam_unix.so nullok\nauth\trequisite\t\t\tpam_deny.so\n');
      await writeFile(join(root, 'etc/pam.d/other'), 'auth required pam_unix.so nullok_secure try_first_pass\n');
      await refuseEmptyPasswords(root);
      assert.equal(await readFile(join(root, 'etc/pam.d/common-auth'), 'utf8'), 'auth\t[success=1 default=ignore]\tpam_unix.so\nauth\trequisite\t\t\tpam_deny.so\n');
      assert.equal(await readFile(join(root, 'etc/pam.d/other'), 'utf8'), 'auth required pam_unix.so try_first_pass\n');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
