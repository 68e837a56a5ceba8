/** The bearer token, kept in localStorage; highlighted when the API answered 401. */
import { useEffect, useRef, useState } from 'react';
import { useApi } from '../lib/api.tsx';

export function TokenField() {
  const { token, setToken, needsToken } = useApi();
  const [draft, setDraft] = useState(token);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => {
    if (needsToken) input.current?.focus();
  }, [needsToken]);
  return (
    <form
      className={needsToken ? 'token needs' : 'token'}
      onSubmit={(e) => {
        e.preventDefault();
        setToken(draft.trim());
      }}
    >
      {needsToken && (
        <span className="token-hint" role="alert">
          The API answered 401: enter its token
        </span>
      )}
      <input ref={input} type="password" aria-label="API token" placeholder="API token (if set)" value={draft} onChange={(e) => setDraft(e.target.value)} autoComplete="off" />
      <button type="submit">{token && draft === token ? 'Saved' : 'Save'}</button>
    </form>
  );
}
