/** `cnfguard explain`'s usage: read by the command's entry (explain.ts) and by the run (explain-run.ts) for usage errors. */
export const EXPLAIN_USAGE = `usage: cnfguard explain -c FILE (--token T | --token-file F) [--cert PEM] [--method M]
                        [--url URL] [--dpop PROOF] [--header 'N: V']... [--json]

Runs cnfguard's pipeline once, as the config at FILE says (introspection and JWKS called live), on
a request built from the options, and prints each step with its outcome, the route chosen, the
token's cnf members against the presented proofs, and the status, challenges and headers a client
would get. The token is never printed, only a prefix of its SHA-256; a signed assertion for the
upstream only decoded, without its signature.
Exit 0: allowed; 1: refused; 2: could not evaluate (bad options or config, the AS or JWKS failing).

  -c, --config FILE   the config file (YAML); default: the CNFGUARD_CONFIG environment variable
  --token T           the access token (visible in the process list: prefer --token-file)
  --token-file F      a file holding the access token (surrounding whitespace ignored)
  --cert PEM          the client certificate file the request presents (its first certificate)
  --method M          the request method (default GET)
  --url URL           the URL the client calls (default: publicOrigin, else https://localhost, and /)
  --dpop PROOF        a DPoP proof JWT: the token is then sent with the DPoP scheme
  --header 'N: V'     another request header (repeatable)
  --json              one JSON object instead of text
  -h, --help          this text
`;
