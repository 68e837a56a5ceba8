/** Plain node:http requests a test can misbehave with: slow bodies, early disconnects, no reading. */
import { type ClientRequest, type IncomingMessage, request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

export interface RawAnswer {
  status: number;
  body: string;
}

/**
 * Sends `writeBody`'s chunks (awaiting each write's drain) and collects the answer. The server may
 * answer and close before the body is done: that is an answer too, not a failure; a reset without
 * an answer resolves with status 0.
 */
export function rawRequest(url: string, method: string, headers: Record<string, string>, writeBody: (req: ClientRequest) => Promise<void>): Promise<RawAnswer> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (a: RawAnswer): void => {
      if (!settled) {
        settled = true;
        resolve(a);
      }
    };
    const req = request(url, { method, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (s: string) => {
        if (body.length < 65536) body += s;
      });
      res.on('end', () => done({ status: res.statusCode ?? 0, body }));
      res.on('error', () => done({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', () => done({ status: 0, body: '' }));
    writeBody(req).then(
      () => req.end(),
      () => req.destroy(),
    );
  });
}

/** Writes `total` bytes in `chunk`-sized pieces, pausing `pauseMs` after the first one. */
export function slowBody(total: number, chunk = 64 * 1024, pauseMs = 300, first?: Buffer): (req: ClientRequest) => Promise<void> {
  return async (req) => {
    let sent = 0;
    if (first) {
      req.write(first);
      sent += first.length;
      await sleep(pauseMs);
    }
    const piece = Buffer.alloc(chunk, 0x61);
    while (sent < total && !req.destroyed) {
      if (!req.write(piece)) await drainOrClose(req);
      sent += chunk;
      if (sent === chunk && !first) await sleep(pauseMs);
    }
  };
}

/** Opens a response, reads `readBytes` of it, then drops the connection. */
export function readThenDisconnect(url: string, method: string, body: string | undefined, readBytes: number, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers: body ? { 'content-type': 'application/json', ...headers } : headers }, (res: IncomingMessage) => {
      let got = 0;
      res.on('data', (c: Buffer) => {
        got += c.length;
        if (got >= readBytes) {
          req.destroy();
          resolve(res.statusCode ?? 0);
        }
      });
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', (e) => {
      if (!req.destroyed) reject(e);
    });
    req.end(body);
  });
}

/**
 * Opens a response and never reads it: the socket's receive buffer fills and the server sees
 * backpressure. Returns a function that drops the connection.
 */
export function openWithoutReading(url: string, method: string, body: string | undefined): Promise<{ status: number; drop: () => void }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers: body ? { 'content-type': 'application/json' } : {} }, (res) => {
      res.pause();
      resolve({ status: res.statusCode ?? 0, drop: () => req.destroy() });
    });
    req.on('error', (e) => {
      if (!req.destroyed) reject(e);
    });
    req.end(body);
  });
}

function drainOrClose(req: ClientRequest): Promise<void> {
  return new Promise((resolve) => {
    const go = (): void => {
      req.off('drain', go);
      req.off('close', go);
      resolve();
    };
    req.on('drain', go);
    req.on('close', go);
  });
}
