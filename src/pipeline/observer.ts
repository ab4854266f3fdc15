/**
 * An optional witness of the pipeline's steps (issue 28: `cnfguard explain`). The pipeline reports
 * each step it runs, in order, with its outcome and a few plain facts; a step added later reports
 * itself the same way and shows up in every observer without the observer knowing it. When no
 * observer is given (every request at the edges) a report is one `undefined` check: the facts are
 * not even built (optional call).
 *
 * Facts are values an operator may see: route ids, reason ids, thumbprints, claims' names and
 * public values. Never a token, a proof, a key or a secret.
 */

/** How a step ended: passed on, refused the request, or (report-only) reported a refusal it did not enforce. */
export type StepOutcome = 'passed' | 'refused' | 'reported';

export type StepFacts = Readonly<Record<string, string | number | boolean | readonly string[] | Readonly<Record<string, unknown>> | undefined>>;

export interface StepReport {
  readonly step: string;
  readonly outcome: StepOutcome;
  readonly facts: StepFacts;
}

export interface PipelineObserver {
  step(step: string, outcome: StepOutcome, facts?: StepFacts): void;
}

/** An observer that keeps the reports in order (explain prints them). */
export function recordingObserver(): PipelineObserver & { readonly steps: StepReport[] } {
  const steps: StepReport[] = [];
  return {
    steps,
    step(step, outcome, facts = {}) {
      steps.push({ step, outcome, facts });
    },
  };
}
