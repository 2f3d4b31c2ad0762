// Client ids: a client authenticated by the certificate `client-A` may use the ids `A` and `A/<session>`
// (certificate ids never contain a slash). Its replies travel over A's connection and its signatures are
// checked with A's key, whatever the session.

/** The authenticated client a (session) id belongs to. */
export function clientIdentityOf(clientId: string): string {
  const slash = clientId.indexOf('/');
  return slash < 0 ? clientId : clientId.slice(0, slash);
}

/** Whether a request's client id is the authenticated client's own or one of its sessions. */
export function requestBelongsTo(requestClientId: string, authenticatedClientId: string): boolean {
  return (
    requestClientId === authenticatedClientId ||
    (requestClientId.length > authenticatedClientId.length + 1 &&
      requestClientId.startsWith(authenticatedClientId) &&
      requestClientId[authenticatedClientId.length] === '/')
  );
}
