/**
 * A minimal writer for the "newc" cpio format the kernel unpacks as an initramfs. Written here
 * rather than shelling out to cpio(1) so the archive is byte-for-byte reproducible (fixed mtimes,
 * inode numbers, owners) and needs no host tool.
 */

export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; mode?: number; data: Buffer }
  | { kind: 'char'; path: string; mode?: number; major: number; minor: number }
  | { kind: 'symlink'; path: string; target: string };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFCHR = 0o020000;
const S_IFLNK = 0o120000;

/** Builds an uncompressed newc archive (uncompressed saves the kernel a decompression at boot). */
export function buildCpio(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  const push = (b: Buffer): void => {
    parts.push(b);
    offset += b.length;
  };
  const pad4 = (): void => {
    const rem = offset % 4;
    if (rem) push(Buffer.alloc(4 - rem));
  };
  let ino = 1;
  const write = (name: string, mode: number, data: Buffer, rdevMajor = 0, rdevMinor = 0, nlink = 1): void => {
    const nameBuf = Buffer.from(`${name}\0`);
    const fields = [ino++, mode, 0, 0, nlink, 0, data.length, 0, 0, rdevMajor, rdevMinor, nameBuf.length, 0];
    push(Buffer.from(`070701${fields.map(hex8).join('')}`, 'ascii'));
    push(nameBuf);
    pad4();
    push(data);
    pad4();
  };
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    if (!name) throw new Error('cpio entry with an empty path');
    switch (e.kind) {
      case 'dir':
        write(name, S_IFDIR | (e.mode ?? 0o755), Buffer.alloc(0), 0, 0, 2);
        break;
      case 'file':
        write(name, S_IFREG | (e.mode ?? 0o644), e.data);
        break;
      case 'char':
        write(name, S_IFCHR | (e.mode ?? 0o600), Buffer.alloc(0), e.major, e.minor);
        break;
      case 'symlink':
        write(name, S_IFLNK | 0o777, Buffer.from(e.target));
        break;
    }
  }
  ino = 0;
  write('TRAILER!!!', 0, Buffer.alloc(0), 0, 0, 1);
  // The kernel reads the initrd in whole blocks; pad to 512 like cpio(1) does.
  const rem = offset % 512;
  if (rem) push(Buffer.alloc(512 - rem));
  return Buffer.concat(parts);
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0').toUpperCase();
}
