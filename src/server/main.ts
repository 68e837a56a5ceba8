/**
 * The service process: compose, listen on TCP (and optionally a Unix socket), close gracefully on
 * SIGINT/SIGTERM. Library code never exits the process; only this file decides to.
 */
import { rm } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import { type KilnConfig, loadConfig } from '../core/config.js';
import { buildApp } from './app.js';
import { composeService } from './compose.js';
import { portLinks } from './port-links.js';
import type { CloseOptions, KilnService } from './service.js';
import { listenPrivately } from './socket.js';

export interface RunningServer {
  svc: KilnService;
  apps: FastifyInstance[];
  url: string;
  /** The apps listener's URL (KILN_APPS_PORT): the port proxy only, on an origin of its own. */
  appsUrl?: string;
  close(o?: CloseOptions): Promise<void>;
}

export async function startServer(config: KilnConfig = loadConfig(), opts: { logger?: boolean; skipScan?: boolean } = {}): Promise<RunningServer> {
  const logger = opts.logger ?? true;
  const log = logger ? (msg: string, fields?: Record<string, unknown>) => console.error(JSON.stringify({ time: new Date().toISOString(), msg, ...fields })) : undefined;
  const svc = await composeService(config, { log, skipScan: opts.skipScan, address: `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${config.port}` });
  const apps: FastifyInstance[] = [];
  try {
    const tcp = await buildApp(svc, { logger: logger ? { level: 'info' } : false });
    apps.push(tcp);
    const address = await tcp.listen({ host: config.host, port: config.port });
    if ((config.host === '0.0.0.0' || config.host === '::') && config.allowedHosts.length === 0) {
      log?.('listening on all interfaces, but only loopback names are accepted as Host: set KILN_ALLOWED_HOSTS to the names clients use (403 HOST_NOT_ALLOWED otherwise)');
    }
    let appsUrl: string | undefined;
    if (config.appsPort !== undefined) {
      const appsApp = await buildApp(svc, { logger: logger ? { level: 'info' } : false, surface: 'apps' });
      apps.push(appsApp);
      appsUrl = await appsApp.listen({ host: config.host, port: config.appsPort });
      portLinks(svc).appsPort = Number(new URL(appsUrl).port);
      log?.("apps listener: browser links to sandbox ports open here, on an origin of their own (KILN_APPS_PORT; 'off' to have none)", { url: appsUrl });
    }
    if (config.socketPath) {
      const local = await buildApp(svc, { logger: false, trustedSocket: true });
      apps.push(local);
      await listenPrivately(local, config.socketPath);
    }
    return {
      svc,
      apps,
      url: address,
      appsUrl,
      async close(o?: CloseOptions) {
        await Promise.allSettled(apps.map((a) => a.close()));
        await svc.close(o);
        if (config.socketPath) await rm(config.socketPath, { force: true });
      },
    };
  } catch (e) {
    await Promise.allSettled(apps.map((a) => a.close()));
    await svc.close();
    throw e;
  }
}

/** Runs until a signal arrives; resolves with the exit code. */
export async function serveForever(config?: KilnConfig): Promise<number> {
  // Last resort only: every request path observes its own promises (test/integration/survival).
  // Were one missed, a log line beats ending every tenant's sandboxes.
  process.on('unhandledRejection', (e) => {
    console.error(JSON.stringify({ time: new Date().toISOString(), msg: 'unhandled rejection (a bug: please report it)', err: e instanceof Error ? e.stack : String(e) }));
  });
  // The handlers go in before the start: the service answers health checks before startServer
  // resolves, and a SIGTERM in that gap must stop it like any other, not end it by the default action.
  let requested: string | undefined;
  let stop: (sig: string) => void = (sig) => {
    requested ??= sig;
  };
  // on, not once: a second signal while closing (a supervisor's and a terminal's, say) must not
  // fall back to the default action and end the process before its sandboxes are torn down.
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  const started = await startServer(config);
  console.error(`kiln listening on ${started.url}${started.appsUrl ? ` (apps opened by browser links on ${started.appsUrl})` : ''}`);
  return new Promise((resolve) => {
    let closing = false;
    stop = (sig: string): void => {
      if (closing) return;
      closing = true;
      // Sandboxes run on for the next start unless the operator wants them gone with the service.
      const keepSandboxes = !started.svc.config.stopSandboxesOnExit;
      console.error(`${sig}: ${keepSandboxes ? 'keeping sandboxes for the next start' : 'closing sandboxes'} and stopping`);
      const hard = setTimeout(() => resolve(1), 20_000);
      started.close({ keepSandboxes }).then(
        () => {
          clearTimeout(hard);
          resolve(0);
        },
        (e) => {
          console.error(e);
          clearTimeout(hard);
          resolve(1);
        },
      );
    };
    if (requested) stop(requested);
  });
}
