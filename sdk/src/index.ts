export { KilnClient, Sandboxes, type KilnClientOptions } from './client.js';
export { isErrorCode, KilnApiError, KilnError, type HttpErrorCode } from './errors.js';
export { BACKEND_NAMES, ERROR_CODES } from './generated.js';
export type * from './types.js';
export { WORKSPACE_CONFLICT, workspaceConflicts, workspaceOf } from './workspace.js';
export type * from './workspace.js';
