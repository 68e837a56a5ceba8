/**
 * The guest kernel command line under Firecracker: the VMM-neutral contract from src/vmimage
 * (console, disk size, exec uid, …) with Firecracker's reboot/panic handling. No `acpi=off`: the
 * Debian kernel has no virtio-mmio command-line devices and finds Firecracker's devices via ACPI.
 */
import { type GuestCmdlineOptions, guestCmdline } from '../../vmimage/cmdline.js';

/** `reboot=k` + `panic=1`: a guest reboot or panic makes Firecracker exit instead of hanging. */
const FIRECRACKER_ARGS = ['reboot=k', 'panic=1', 'pci=off', 'i8042.noaux', 'i8042.nomux', 'i8042.dumbkbd'];

export function firecrackerCmdline(o: GuestCmdlineOptions): string {
  const { extra, ...base } = o;
  const words = guestCmdline(base).split(' ');
  // Words after "--" are init's argv (the agent's --init mode): kernel parameters go before them.
  const sep = words.indexOf('--');
  const kernel = (sep < 0 ? words : words.slice(0, sep)).filter((a) => !/^(reboot|panic|pci)=/.test(a));
  const init = sep < 0 ? [] : words.slice(sep);
  return [...kernel, ...FIRECRACKER_ARGS, ...(extra ? [extra] : []), ...init].join(' ');
}
