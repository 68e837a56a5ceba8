/** Packs, backends and live sandboxes as React state, loaded through the SDK. */
import { useCallback, useEffect, useState } from 'react';
import type { BackendInfo, PackInfo, SandboxInfo } from '../../../sdk/src/index.ts';
import { useApi } from './api.tsx';
import { usePoll } from './usePoll.ts';

export interface Loaded<T> {
  data: T | undefined;
  error: string | undefined;
  reload(): Promise<void>;
}

function useLoad<T>(load: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const { report } = useApi();
  const [data, setData] = useState<T>();
  const [error, setError] = useState<string>();
  const reload = useCallback(async () => {
    try {
      setData(await load());
      setError(undefined);
    } catch (e) {
      setError(report(e));
    }
  }, deps);
  useEffect(() => {
    void reload();
  }, [reload]);
  return { data, error, reload };
}

export function usePacks(): Loaded<PackInfo[]> {
  const { client } = useApi();
  return useLoad(() => client.packs(), [client]);
}

export function useBackends(): Loaded<{ default: string; backends: BackendInfo[] }> {
  const { client } = useApi();
  return useLoad(() => client.backends(), [client]);
}

/** The live sandbox list, polled. */
export function useSandboxes(intervalMs = 2000): Loaded<SandboxInfo[]> {
  const { client, report } = useApi();
  const [data, setData] = useState<SandboxInfo[]>();
  const [error, setError] = useState<string>();
  const reload = useCallback(async () => {
    try {
      setData(await client.sandboxes.list());
      setError(undefined);
    } catch (e) {
      setError(report(e));
    }
  }, [client, report]);
  usePoll(reload, intervalMs, [reload]);
  return { data, error, reload };
}
