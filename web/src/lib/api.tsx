/**
 * The one place the dashboard gets its KilnClient: same origin, with the bearer token the user saved.
 * Any page reports failures through `useApi().report`, which remembers a 401 so the header can ask
 * for a token.
 */
import { createContext, type ReactNode, useCallback, useContext, useMemo, useState } from 'react';
import { KilnClient, KilnError } from '../../../sdk/src/index.ts';

const TOKEN_KEY = 'kiln.token';

export interface Api {
  client: KilnClient;
  token: string;
  setToken(token: string): void;
  /** True after the API answered 401 and until a new token is saved. */
  needsToken: boolean;
  /** Turns a thrown value into the text to show; flags 401s. */
  report(e: unknown): string;
}

const ApiContext = createContext<Api | undefined>(undefined);

export function ApiProvider({ children }: { children: ReactNode }) {
  const [token, setTokenState] = useState(() => localStorage.getItem(TOKEN_KEY) ?? '');
  const [needsToken, setNeedsToken] = useState(false);
  const client = useMemo(() => new KilnClient({ baseUrl: '', token: token || undefined, requestTimeoutMs: 15 * 60_000 }), [token]);
  const setToken = useCallback((t: string) => {
    if (t) localStorage.setItem(TOKEN_KEY, t);
    else localStorage.removeItem(TOKEN_KEY);
    setTokenState(t);
    setNeedsToken(false);
  }, []);
  const report = useCallback((e: unknown) => {
    if (e instanceof KilnError && e.status === 401) setNeedsToken(true);
    return errorText(e);
  }, []);
  const api = useMemo(() => ({ client, token, setToken, needsToken, report }), [client, token, setToken, needsToken, report]);
  return <ApiContext.Provider value={api}>{children}</ApiContext.Provider>;
}

export function useApi(): Api {
  const api = useContext(ApiContext);
  if (!api) throw new Error('useApi outside <ApiProvider>');
  return api;
}

/** The API's own words: "CODE: message". */
export function errorText(e: unknown): string {
  if (e instanceof KilnError) return `${e.code}: ${e.message}`;
  if (e instanceof DOMException && e.name === 'AbortError') return 'cancelled';
  if (e instanceof DOMException && e.name === 'TimeoutError') return 'TIMEOUT: the request took too long';
  if (e instanceof Error) return e.message;
  return String(e);
}
