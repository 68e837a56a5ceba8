/**
 * Request and response bodies of the Firecracker API calls kiln makes, typed from the official
 * swagger description (firecracker-api.yaml). Field names are Firecracker's (snake_case); kiln's
 * own option types elsewhere carry units in their names and are mapped onto these.
 */
export interface TokenBucket {
  size: number;
  refill_time: number;
  one_time_burst?: number;
}

export interface RateLimiter {
  /** Tokens are bytes. */
  bandwidth?: TokenBucket;
  /** Tokens are I/O operations. */
  ops?: TokenBucket;
}

export interface Logger {
  level?: 'Error' | 'Warning' | 'Info' | 'Debug' | 'Trace' | 'Off';
  log_path?: string;
  show_level?: boolean;
  show_log_origin?: boolean;
}

export interface MachineConfiguration {
  vcpu_count: number;
  mem_size_mib: number;
  smt?: boolean;
  track_dirty_pages?: boolean;
  huge_pages?: 'None' | 'Transparent' | '2M';
}

export interface BootSource {
  kernel_image_path: string;
  initrd_path?: string;
  boot_args?: string;
}

export interface Drive {
  drive_id: string;
  is_root_device: boolean;
  is_read_only?: boolean;
  path_on_host?: string;
  cache_type?: 'Unsafe' | 'Writeback';
  io_engine?: 'Sync' | 'Async';
  rate_limiter?: RateLimiter;
}

export interface Vsock {
  guest_cid: number;
  uds_path: string;
}

export interface EntropyDevice {
  rate_limiter?: RateLimiter;
}

/** PATCH /network-interfaces/{iface_id} after the start. */
export interface PartialNetworkInterface {
  iface_id: string;
  rx_rate_limiter?: RateLimiter;
  tx_rate_limiter?: RateLimiter;
}

export interface NetworkInterface {
  iface_id: string;
  host_dev_name: string;
  guest_mac?: string;
  rx_rate_limiter?: RateLimiter;
  tx_rate_limiter?: RateLimiter;
}

export type InstanceAction = 'InstanceStart' | 'SendCtrlAltDel' | 'FlushMetrics';

export interface SnapshotCreateParams {
  snapshot_path: string;
  mem_file_path: string;
  snapshot_type?: 'Full' | 'Diff';
}

export interface SnapshotLoadParams {
  snapshot_path: string;
  mem_backend: { backend_type: 'File' | 'Uffd'; backend_path: string };
  resume_vm?: boolean;
  track_dirty_pages?: boolean;
  /** A restored NIC's TAP under another name than at the snapshot (each clone has its own). */
  network_overrides?: Array<{ iface_id: string; host_dev_name: string }>;
}

export interface InstanceInfo {
  app_name: string;
  id: string;
  state: 'Not started' | 'Running' | 'Paused';
  vmm_version: string;
}

export interface FirecrackerVersion {
  firecracker_version: string;
}
