export { KilnClient, Sandboxes, type KilnClientOptions } from './client.js';
export { KilnApiError } from './errors.js';
export type * from './types.js';
