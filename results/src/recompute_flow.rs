//! The recomputation steps as the CLI and the API take them, over any [`ResultStore`]: a
//! request is checked against the configuration and the recomputations already stored, then
//! stored; a decision appends its steps (`recompute::decision_steps`) under the life-cycle check.

use gridprobe_config::Config;

use crate::availability::Ms;
use crate::recompute::{decision_steps, validate, Recomputation, RecomputationRequest, StepKind};
use crate::store::{ResultStore, StoreError};

/// Checks and stores a request. `Ok(Err(reason))` when it is refused.
pub async fn request(
    store: &dyn ResultStore,
    config: &Config,
    mut request: RecomputationRequest,
    now_ms: Ms,
) -> Result<Result<Recomputation, String>, StoreError> {
    let existing = store.recomputations().await?;
    if let Err(e) = validate(&mut request, config, now_ms, &existing) {
        return Ok(Err(e));
    }
    store.add_recomputation(&request, now_ms).await.map(Ok)
}

/// Records an operator's decision (approved — which applies it —, rejected or revoked).
/// `Ok(Err(reason))` when the step is not allowed, or when a rejection or revocation comes
/// without a note saying why.
pub async fn decide(
    store: &dyn ResultStore,
    id: i64,
    decision: StepKind,
    by: &str,
    note: &str,
    now_ms: Ms,
) -> Result<Result<Recomputation, String>, StoreError> {
    if matches!(decision, StepKind::Rejected | StepKind::Revoked) && note.trim().is_empty() {
        return Ok(Err(format!(
            "say why the recomputation is {}: a note is required",
            decision.name()
        )));
    }
    if !matches!(
        decision,
        StepKind::Approved | StepKind::Rejected | StepKind::Revoked
    ) {
        return Ok(Err(format!("`{}` is not a decision", decision.name())));
    }
    store
        .recomputation_steps(id, &decision_steps(decision, by, now_ms, note.trim()))
        .await
}
