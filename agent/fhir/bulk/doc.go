// Package bulk is a FHIR Bulk Data Access (v2) client with SMART Backend
// Services authorization, used by the site agent to pull a hospital's EHR
// data ($export) and stream it into the agent's FHIR reader.
//
// One export runs in three steps, each exported so that an agent can keep
// the status URL across a restart:
//
//   - Start sends the kick-off request (system, Patient or Group level,
//     with _type and _since) and returns the status URL from the 202
//     response's Content-Location.
//   - Wait polls the status URL with backoff, honouring Retry-After, until
//     the server answers with the completion manifest.
//   - Download streams every output file (gzip when the server says so)
//     through fhir.ReadNDJSON into a fhir.Sink; error files
//     (OperationOutcome NDJSON) are counted, not ingested.
//
// Export runs all three. Its Result carries the manifest's transactionTime,
// which is the Since of the next, incremental, export.
//
// Authorization follows SMART Backend Services: the client signs a JWT
// client assertion (ES384 with a P-384 key or RS384 with an RSA key),
// exchanges it at the token endpoint (discovered from
// .well-known/smart-configuration unless configured) for a bearer token,
// caches the token until shortly before it expires, and on a 401 fetches a
// new one and retries once. The token is only ever sent to the FHIR
// server's own origin.
//
// Every wait (polling, Retry-After, backoff) goes through the Clock in
// Config, so tests drive time instead of sleeping. Errors and logs name
// the server's endpoints, HTTP statuses, OperationOutcome issue codes and
// counts only; resource contents never reach them.
package bulk
