/**
 * What `cnfguard explain` reports, built from one pipeline run (pure): the steps as the pipeline
 * reported them (observer.ts), the route, each `cnf` member of the token against the proof the
 * request presented, and the answer a client would get, rendered by the edges' own renderer. The
 * token itself is never part of it: only a prefix of its SHA-256. Nor is any signed value the
 * upstream would get (the assertion): only its decoded header and claims, never its signature.
 */
import { createHash } from 'node:crypto';
import { answerHeaders, renderFor } from '../edge/answer.ts';
import type { StepReport } from '../pipeline/observer.ts';
import type { Verdict } from '../pipeline/pipeline.ts';
import { PROOF_METHODS, type Proof } from '../proof/registry.ts';
import { thumbprintsEqual } from '../tls/certificates.ts';

/** 0 allowed, 1 refused, 2 could not evaluate (cnfguard or the AS failed: a 5xx answer, or no run at all). */
export type ExplainExit = 0 | 1 | 2;

export interface CnfComparison {
  member: string;
  /** The proof method that checks the member; undefined: no method cnfguard knows. */
  method: string | undefined;
  bound: string | undefined;
  presented: string | undefined;
  result: 'match' | 'mismatch' | 'missing' | 'unknown';
}

export interface ExplainReport {
  token: { sha256Prefix: string };
  request: { method: string; url: string; scheme: string };
  steps: StepReport[];
  route: string;
  cnf: CnfComparison[];
  decision: 'allow' | 'deny';
  reason: string;
  /**
   * What the client gets (refused), or what the upstream gets besides the request (allowed). A
   * signed header value (the assertion) is never shown whole: `identityHeaders` holds a
   * placeholder, `signedHeaders` its decoded JOSE header and claims, without the signature.
   */
  answer: {
    status: number | 'upstream';
    headers: Record<string, string | string[]>;
    body?: string;
    upstream?: string;
    identityHeaders?: Record<string, string>;
    signedHeaders?: Record<string, DecodedJws>;
  };
  exit: ExplainExit;
}

/** A JWS (or JWE) shown without what makes it usable: its protected header and, for a JWS, its claims. */
export interface DecodedJws {
  header: Record<string, unknown>;
  claims?: unknown;
}

/** A compact JWS (three parts) or JWE (five), base64url: the shape of a bearer credential. */
const COMPACT_JOSE = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*){2}(?:(?:\.[A-Za-z0-9_-]*){2})?$/;

function decodedPart(part: string): unknown {
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * `value` as a compact JWS or JWE whose protected header names an `alg`, decoded (the signature
 * and any encrypted parts left out); undefined when it is not one. A header value of this shape
 * is a credential an upstream may accept (the signed assertion is one): explain never prints it.
 */
export function decodeCompactJose(value: string): DecodedJws | undefined {
  if (!COMPACT_JOSE.test(value)) return undefined;
  const parts = value.split('.');
  const header = decodedPart(parts[0] as string);
  if (header === null || typeof header !== 'object' || Array.isArray(header) || typeof (header as Record<string, unknown>).alg !== 'string') return undefined;
  if (parts.length === 5) return { header: header as Record<string, unknown> };
  const claims = decodedPart(parts[1] as string);
  return { header: header as Record<string, unknown>, ...(claims !== undefined && { claims }) };
}

/** What stands for a signed value in the output: enough to recognise it (alg, kid, exp), nothing to replay. */
function withheld(decoded: DecodedJws): string {
  const { alg, kid } = decoded.header;
  const exp = (decoded.claims as { exp?: unknown } | undefined)?.exp;
  const facts = [`alg=${String(alg)}`, ...(typeof kid === 'string' ? [`kid=${kid}`] : []), ...(typeof exp === 'number' ? [`exp=${new Date(exp * 1000).toISOString()}`] : [])];
  return `<${decoded.claims === undefined ? 'encrypted JWT' : 'signed JWT'}, signature withheld: ${facts.join(' ')}>`;
}

/**
 * The identity headers as explain shows them: every value that is a compact JWS or JWE (the
 * assertion, or a claim that holds one) replaced by a placeholder, and decoded beside.
 */
export function shownIdentityHeaders(headers: Readonly<Record<string, string>>, assertionHeader: string): { identityHeaders: Record<string, string>; signedHeaders: Record<string, DecodedJws> } {
  const identityHeaders: Record<string, string> = {};
  const signedHeaders: Record<string, DecodedJws> = {};
  for (const [name, value] of Object.entries(headers)) {
    const decoded = decodeCompactJose(value);
    if (decoded !== undefined) {
      signedHeaders[name] = decoded;
      identityHeaders[name] = withheld(decoded);
    } else if (name === assertionHeader) {
      // Not of the expected shape: still the upstream's credential, so nothing of it is shown.
      identityHeaders[name] = `<${value.length} characters withheld>`;
    } else identityHeaders[name] = value;
  }
  return { identityHeaders, signedHeaders };
}

/** The token's name in every output: 12 characters of base64url SHA-256 (72 bits: tells tokens apart, reveals nothing). */
export function tokenHashPrefix(token: string): string {
  return createHash('sha256').update(token).digest('base64url').slice(0, 12);
}

/** The token's cnf members against what the request presented: the certificate, and each proof the pipeline verified. */
export function compareCnf(steps: readonly StepReport[], certificateThumbprint: string | undefined): CnfComparison[] {
  const validation = steps.find((s) => s.step === 'validation');
  const cnf = validation?.facts.cnf as Readonly<Record<string, unknown>> | undefined;
  if (cnf === undefined || cnf === null || typeof cnf !== 'object') return [];
  const proven: Record<string, { jkt: string }> = {};
  for (const step of steps) if (step.step === 'proof' && typeof step.facts.method === 'string' && typeof step.facts.jkt === 'string') proven[step.facts.method] = { jkt: step.facts.jkt };
  const proof: Proof = { certificate: certificateThumbprint === undefined ? undefined : { thumbprint: certificateThumbprint }, ...proven };
  return Object.entries(cnf).map(([member, value]) => {
    const method = PROOF_METHODS.find((m) => m.cnfMember === member);
    const bound = typeof value === 'string' ? value : JSON.stringify(value);
    if (method === undefined) return { member, method: undefined, bound, presented: undefined, result: 'unknown' as const };
    const presented = method.provenKey(proof);
    const result = presented === undefined ? 'missing' : typeof value === 'string' && thumbprintsEqual(value, presented) ? 'match' : 'mismatch';
    return { member, method: method.id, bound, presented, result };
  });
}

export function buildReport(input: {
  token: string;
  method: string;
  url: string;
  verdict: Verdict;
  steps: StepReport[];
  realm: string;
  certificateThumbprint: string | undefined;
}): ExplainReport {
  const { verdict } = input;
  const { decision } = verdict;
  const base = {
    token: { sha256Prefix: tokenHashPrefix(input.token) },
    request: { method: input.method, url: input.url, scheme: verdict.scheme },
    steps: input.steps,
    route: verdict.route.id,
    cnf: compareCnf(input.steps, input.certificateThumbprint),
  };
  const extra = answerHeaders(verdict, 'explain');
  delete extra['x-request-id'];
  if (decision.allow) {
    const { identityHeaders, signedHeaders } = shownIdentityHeaders(verdict.identityHeaders ?? {}, verdict.route.assertionHeader);
    return {
      ...base,
      decision: 'allow',
      reason: decision.wouldDeny === undefined ? decision.reason : `report-only, would deny: ${decision.wouldDeny.reason}`,
      answer: { status: 'upstream', headers: extra, upstream: verdict.route.upstream.href, identityHeaders, ...(Object.keys(signedHeaders).length > 0 && { signedHeaders }) },
      exit: 0,
    };
  }
  const rendered = renderFor(decision.error, input.realm, verdict);
  // The headers exactly as the proxy edge writes them (answer.ts sendRendered): every challenge on one line.
  const headers: Record<string, string | string[]> = { ...rendered.headers, ...extra };
  return {
    ...base,
    decision: 'deny',
    reason: decision.error.reason,
    answer: { status: rendered.status, headers, body: rendered.body },
    exit: rendered.status >= 500 ? 2 : 1,
  };
}

function factText(value: unknown): string {
  if (Array.isArray(value)) return value.join(' ');
  if (value !== null && typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** The report for a person: one line per step, the cnf table, the answer. */
export function formatReport(report: ExplainReport): string {
  const lines: string[] = [];
  lines.push(`token     sha256:${report.token.sha256Prefix}… (the token itself is never printed)`);
  lines.push(`request   ${report.request.method} ${report.request.url} (${report.request.scheme === 'bearer' ? 'Bearer' : report.request.scheme} scheme)`);
  lines.push('', 'steps');
  const mark = { passed: 'ok     ', refused: 'REFUSED', reported: 'REPORT ' } as const;
  for (const step of report.steps) {
    const facts = Object.entries(step.facts)
      .filter(([, value]) => value !== undefined)
      .map(([name, value]) => `${name}=${factText(value)}`)
      .join(' ');
    lines.push(`  ${mark[step.outcome]} ${step.step.padEnd(12)} ${facts}`);
  }
  lines.push('', `route     ${report.route}`);
  if (report.cnf.length > 0) {
    lines.push('', 'cnf (token) against the proof presented');
    for (const c of report.cnf) {
      lines.push(`  ${c.member.padEnd(9)} ${c.result.toUpperCase()}${c.method === undefined ? ' (no method cnfguard knows)' : ` (${c.method})`}`);
      lines.push(`    token     ${c.bound ?? '-'}`);
      lines.push(`    presented ${c.presented ?? '(none)'}`);
    }
  } else lines.push('', 'cnf       (none: the token is not bound, or was not validated)');
  lines.push('', `decision  ${report.decision} (${report.reason})`);
  const { answer } = report;
  if (answer.status === 'upstream') {
    lines.push(`answer    forwarded to ${answer.upstream ?? 'the upstream'}; the upstream's answer goes back to the client`);
    for (const [name, value] of Object.entries(answer.identityHeaders ?? {})) {
      lines.push(`  upstream gets ${name}: ${value}`);
      const signed = answer.signedHeaders?.[name];
      if (signed === undefined) continue;
      lines.push(`    header ${JSON.stringify(signed.header)}`);
      if (signed.claims !== undefined) lines.push(`    claims ${JSON.stringify(signed.claims)}`);
    }
  } else lines.push(`answer    ${answer.status}`);
  for (const [name, value] of Object.entries(answer.headers)) for (const v of Array.isArray(value) ? value : [value]) lines.push(`  ${name}: ${v}`);
  if (answer.body !== undefined) lines.push(`  ${answer.body}`);
  lines.push(`exit      ${report.exit} (${['allowed', 'refused', 'could not evaluate'][report.exit]})`);
  return `${lines.join('\n')}\n`;
}
