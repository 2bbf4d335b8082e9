//! The run as one pure state machine: where a run is, what its executor
//! observed, and what it must do next. No I/O and no clock. Two executors
//! run the actions and feed back what they observed: the cluster leader
//! over a coordinator (`cluster/driver.rs`; `recon serve`, with one
//! in-process member when no coordinator is configured) and a
//! single-instance run in one process (`run/single.rs`; `recon reconcile`).
//!
//! ```text
//!            Started           AllPaused           Planned
//! Requested ─────────► Pausing ─────────► Planning ────────► Working
//!                         │                  │  TenantListFailed │ AllUnitsDone
//!                         │ abort¹           ▼                   ▼
//!                         └──────────────► Closing ◄──── Completing
//!                                            │ StoreClosed  (Incomplete:
//!                                            ▼               aborted)
//!                                     BarrierWriting
//!                                            │ BarrierWritten
//!                                            ▼
//!                                   Recording ─ RecordFailed ─► Ended (kept)
//!                                            │ Recorded
//!                                            ▼
//!                                         Purging ─ Purged ─► Ended
//!
//! ¹ abort: AbortRequested (operator) or PauseExpired (max_pause) from
//!   Pausing, Planning, Working, Completing or the closing of a completed
//!   run; the floors of tenants reconciled whole are raised first.
//!   LeadershipLost from anywhere: Deposed, which does nothing more.
//! ```
//!
//! The run's state in the coordinator (`RunPhase`) stores the first three
//! active states; a new leader adopts a run at its stored phase
//! ([`RunMachine::adopt`]), the stages after it are one step of one
//! leader.

/// How a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every unit done and the floors raised.
    Completed,
    /// The tenant list failed or tripped the guard: nothing was planned.
    TenantListFailed,
    /// Ended early; units done stay.
    Aborted(AbortCause),
}

/// Why a run was aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortCause {
    /// An operator asked for it.
    Operator,
    /// The run outlived `max_pause`.
    PauseExpired,
    /// Completing failed: the source was restored under the run, or its
    /// floors could not be raised. No floor is raised for it.
    Incomplete,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStage {
    /// A request is pending; no run is current.
    Requested,
    /// The run is current; members pause and acknowledge.
    Pausing,
    /// Every member paused; the leader reconciles the tenant list and plans.
    Planning,
    /// Units are handed out and worked.
    Working,
    /// Every unit is done; the run's status is settled and its floors
    /// raised.
    Completing,
    /// The run is being closed in the store (a fresh epoch fences it).
    Closing(Ending),
    /// The barrier is being written: consumers resume once it is.
    BarrierWriting(Ending),
    /// The barrier is written; the run is being kept in the store's history.
    Recording(Ending),
    /// The run is in the history; its coordinator keys are being purged.
    Purging(Ending),
    /// Over. `purged` is false when the history did not take the run: its
    /// keys stay so that nothing of it is lost.
    Ended {
        /// How it ended.
        ending: Ending,
        /// Whether its keys were purged.
        purged: bool,
    },
    /// This leader lost its leadership: it does nothing more for the run
    /// (a new leader adopts it).
    Deposed,
}

impl RunStage {
    /// Whether a run at this stage can still be aborted (an operator's
    /// abort, `max_pause`): before its barrier, including a completed run
    /// that the store does not close in time. Every action at such a stage
    /// is bounded by what is left of `max_pause`.
    pub fn abortable(self) -> bool {
        matches!(
            self,
            Self::Pausing
                | Self::Planning
                | Self::Working
                | Self::Completing
                | Self::Closing(Ending::Completed)
        )
    }
}

/// What the leader observed (the result of an action, or of a look at the
/// coordinator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The run was written as the current run (the request consumed).
    Started,
    /// Every live member acknowledged the pause.
    AllPaused,
    /// The plan was written.
    Planned,
    /// The tenant list failed or tripped the guard.
    TenantListFailed,
    /// Every planned unit has a done-record.
    AllUnitsDone,
    /// The run completed: no restore seen, its floors raised (unless dry).
    Completed,
    /// An operator asked for an abort.
    AbortRequested,
    /// `max_pause` passed.
    PauseExpired,
    /// The run could not complete (a restore seen, a floor not raised).
    Incomplete,
    /// The store closed the run (a fresh epoch was acquired).
    StoreClosed,
    /// The store could not close the run.
    StoreCloseFailed,
    /// The barrier was written.
    BarrierWritten,
    /// The store's history took the run.
    Recorded,
    /// The store's history did not take the run.
    RecordFailed,
    /// The run's keys were purged.
    Purged,
    /// This member's leadership is gone.
    LeadershipLost,
}

/// What the leader must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write the run as current, consuming the request.
    StartRun,
    /// Look at the pause acknowledgements.
    CheckAcks,
    /// Reconcile the tenant list and write the plan.
    Plan,
    /// Hand out units nobody live holds; look whether all are done.
    HandOut,
    /// Settle the run's status: unless a unit saw a restore, raise every
    /// planned tenant's floor.
    Complete,
    /// Raise the floors of the tenants reconciled whole (an aborted run:
    /// old-generation events still in Kafka must not overwrite what it
    /// restored).
    RaiseFloorsOfWholeTenants,
    /// Close the run in the store.
    CloseInStore,
    /// Write the barrier (with how the run ended).
    WriteBarrier(Ending),
    /// Keep the run in the store's history.
    Record,
    /// Delete the run's coordinator keys.
    Purge,
}

/// A run's state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunMachine {
    stage: RunStage,
}

impl RunMachine {
    /// A machine for a pending request.
    pub fn requested() -> Self {
        Self {
            stage: RunStage::Requested,
        }
    }

    /// A machine for a run found current at `stage` (one of the stored
    /// stages: pausing, planning, working), adopted or continued.
    pub fn adopt(stage: RunStage) -> Self {
        Self { stage }
    }

    /// Where the run is.
    pub fn stage(&self) -> RunStage {
        self.stage
    }

    /// What a step at the current stage starts with (before anything new
    /// was observed).
    pub fn next_actions(&self) -> Vec<Action> {
        match self.stage {
            RunStage::Requested => vec![Action::StartRun],
            RunStage::Pausing => vec![Action::CheckAcks],
            RunStage::Planning => vec![Action::Plan],
            RunStage::Working => vec![Action::HandOut],
            RunStage::Completing => vec![Action::Complete],
            RunStage::Closing(_) => vec![Action::CloseInStore],
            RunStage::BarrierWriting(ending) => vec![Action::WriteBarrier(ending)],
            RunStage::Recording(_) => vec![Action::Record],
            RunStage::Purging(_) => vec![Action::Purge],
            RunStage::Ended { .. } | RunStage::Deposed => Vec::new(),
        }
    }

    /// Takes `observation` in: the next stage, and what to do now.
    /// Observations that do not apply to the stage change nothing.
    pub fn step(&mut self, observation: Observation) -> Vec<Action> {
        let next = transition(self.stage, observation);
        if next == self.stage {
            return Vec::new();
        }
        self.stage = next;
        let mut actions = Vec::new();
        if let RunStage::Closing(Ending::Aborted(AbortCause::Operator | AbortCause::PauseExpired)) =
            next
        {
            actions.push(Action::RaiseFloorsOfWholeTenants);
        }
        actions.extend(self.next_actions());
        actions
    }

    /// Whether the run has ended (its barrier written).
    pub fn ended(&self) -> bool {
        matches!(
            self.stage,
            RunStage::Recording(_) | RunStage::Purging(_) | RunStage::Ended { .. }
        )
    }
}

/// The stage after `stage` once `observation` is seen.
fn transition(stage: RunStage, observation: Observation) -> RunStage {
    use Observation as O;
    use RunStage as S;
    if observation == O::LeadershipLost {
        return match stage {
            S::Ended { .. } => stage,
            _ => S::Deposed,
        };
    }
    let abort = |cause| S::Closing(Ending::Aborted(cause));
    let abortable = stage.abortable();
    match (stage, observation) {
        (_, O::AbortRequested) if abortable => abort(AbortCause::Operator),
        (_, O::PauseExpired) if abortable => abort(AbortCause::PauseExpired),
        (S::Requested, O::Started) => S::Pausing,
        (S::Pausing, O::AllPaused) => S::Planning,
        (S::Planning, O::Planned) => S::Working,
        (S::Planning, O::TenantListFailed) => S::Closing(Ending::TenantListFailed),
        (S::Working, O::AllUnitsDone) => S::Completing,
        (S::Completing, O::Completed) => S::Closing(Ending::Completed),
        (S::Completing, O::Incomplete) => abort(AbortCause::Incomplete),
        (S::Closing(ending), O::StoreClosed) => S::BarrierWriting(ending),
        // An aborted run resumes the consumers even if the store cannot
        // close it (the pause stays bounded); a completed one must be
        // closed first and is closed again at the next step.
        (S::Closing(ending @ Ending::Aborted(_)), O::StoreCloseFailed) => S::BarrierWriting(ending),
        (S::BarrierWriting(ending), O::BarrierWritten) => S::Recording(ending),
        (S::Recording(ending), O::Recorded) => S::Purging(ending),
        (S::Recording(ending), O::RecordFailed) => S::Ended {
            ending,
            purged: false,
        },
        (S::Purging(ending), O::Purged) => S::Ended {
            ending,
            purged: true,
        },
        (stage, _) => stage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OBSERVATIONS: [Observation; 16] = [
        Observation::Started,
        Observation::AllPaused,
        Observation::Planned,
        Observation::TenantListFailed,
        Observation::AllUnitsDone,
        Observation::Completed,
        Observation::AbortRequested,
        Observation::PauseExpired,
        Observation::Incomplete,
        Observation::StoreClosed,
        Observation::StoreCloseFailed,
        Observation::BarrierWritten,
        Observation::Recorded,
        Observation::RecordFailed,
        Observation::Purged,
        Observation::LeadershipLost,
    ];

    /// Every action of a machine fed `observations`, in order.
    fn run(observations: &[Observation]) -> (RunMachine, Vec<Action>) {
        let mut machine = RunMachine::requested();
        let mut actions = machine.next_actions();
        for observation in observations {
            actions.extend(machine.step(*observation));
        }
        (machine, actions)
    }

    /// Random observation sequences in which a run usually gets far: the
    /// observations that end or depose it are rarer than those that move
    /// it on.
    fn observations() -> impl Strategy<Value = Vec<Observation>> {
        let weighted = OBSERVATIONS.map(|observation| {
            let weight = match observation {
                Observation::AbortRequested
                | Observation::PauseExpired
                | Observation::Incomplete
                | Observation::LeadershipLost => 1,
                _ => 8,
            };
            (weight, Just(observation).boxed())
        });
        proptest::collection::vec(
            proptest::strategy::Union::new_weighted(weighted.to_vec()),
            0..60,
        )
    }

    proptest! {
        /// No run ends twice: one barrier at most.
        #[test]
        fn a_run_writes_at_most_one_barrier(observations in observations()) {
            let (_, actions) = run(&observations);
            let barriers = actions.iter().filter(|action| matches!(action, Action::WriteBarrier(_))).count();
            prop_assert!(barriers <= 1, "{barriers} barriers: {actions:?}");
        }

        /// Every ended run wrote its barrier, and was recorded before its
        /// keys were purged.
        #[test]
        fn an_ended_run_has_a_barrier_and_a_record_before_its_purge(observations in observations()) {
            let (machine, actions) = run(&observations);
            if machine.ended() {
                prop_assert!(actions.iter().any(|action| matches!(action, Action::WriteBarrier(_))), "{actions:?}");
            }
            if let Some(purge) = actions.iter().position(|action| *action == Action::Purge) {
                let record = actions.iter().position(|action| *action == Action::Record);
                prop_assert!(record.is_some_and(|record| record < purge), "{actions:?}");
            }
            if let RunStage::Ended { purged: true, .. } = machine.stage() {
                prop_assert!(actions.contains(&Action::Purge));
            }
        }

        /// Floors are raised only for what a run reconciled whole: every
        /// tenant by a run whose units are all done, the whole tenants by an
        /// aborted one (never after a restore or a failed completion), and
        /// never once the barrier resumed the consumers.
        #[test]
        fn floors_are_raised_only_for_what_was_reconciled_whole(observations in observations()) {
            let (_, actions) = run(&observations);
            let all_done = observations.iter().position(|observation| *observation == Observation::AllUnitsDone);
            if let Some(complete) = actions.iter().position(|action| *action == Action::Complete) {
                prop_assert!(all_done.is_some(), "completed without every unit done: {actions:?}");
                let _ = complete;
            }
            let barrier = actions.iter().position(|action| matches!(action, Action::WriteBarrier(_)));
            if let Some(barrier) = barrier {
                prop_assert!(!actions[barrier..].iter().any(|action| matches!(action, Action::Complete | Action::RaiseFloorsOfWholeTenants)), "{actions:?}");
                let ending = actions[barrier];
                if matches!(ending, Action::WriteBarrier(Ending::Aborted(AbortCause::Incomplete)) | Action::WriteBarrier(Ending::TenantListFailed)) {
                    prop_assert!(!actions.contains(&Action::RaiseFloorsOfWholeTenants), "{actions:?}");
                }
            }
        }

        /// A completed run's floors are raised and the run closed in the
        /// store before its barrier resumes the consumers.
        #[test]
        fn a_completed_run_raises_floors_and_closes_before_its_barrier(observations in observations()) {
            let (_, actions) = run(&observations);
            if let Some(barrier) = actions.iter().position(|action| *action == Action::WriteBarrier(Ending::Completed)) {
                let raised = actions.iter().position(|action| *action == Action::Complete);
                let closed = actions.iter().position(|action| *action == Action::CloseInStore);
                prop_assert!(raised.is_some_and(|raised| raised < barrier), "{actions:?}");
                prop_assert!(closed.is_some_and(|closed| closed < barrier), "{actions:?}");
            }
        }

        /// A deposed leader does nothing more for the run.
        #[test]
        fn a_deposed_leader_acts_no_more(observations in observations()) {
            let mut machine = RunMachine::requested();
            let mut deposed = false;
            for observation in observations {
                let actions = machine.step(observation);
                if deposed {
                    prop_assert!(actions.is_empty(), "acted after being deposed: {actions:?}");
                }
                deposed |= machine.stage() == RunStage::Deposed;
            }
        }
    }

    #[test]
    fn the_happy_path_reaches_a_purged_end() {
        let (machine, actions) = run(&[
            Observation::Started,
            Observation::AllPaused,
            Observation::Planned,
            Observation::AllUnitsDone,
            Observation::Completed,
            Observation::StoreClosed,
            Observation::BarrierWritten,
            Observation::Recorded,
            Observation::Purged,
        ]);
        assert_eq!(
            machine.stage(),
            RunStage::Ended {
                ending: Ending::Completed,
                purged: true
            }
        );
        assert_eq!(
            actions,
            [
                Action::StartRun,
                Action::CheckAcks,
                Action::Plan,
                Action::HandOut,
                Action::Complete,
                Action::CloseInStore,
                Action::WriteBarrier(Ending::Completed),
                Action::Record,
                Action::Purge,
            ]
        );
    }

    #[test]
    fn an_abort_raises_only_whole_tenants_floors_then_closes() {
        let (machine, actions) = run(&[
            Observation::Started,
            Observation::AllPaused,
            Observation::Planned,
            Observation::AbortRequested,
            Observation::StoreCloseFailed,
            Observation::BarrierWritten,
            Observation::RecordFailed,
        ]);
        let aborted = Ending::Aborted(AbortCause::Operator);
        assert_eq!(
            machine.stage(),
            RunStage::Ended {
                ending: aborted,
                purged: false
            }
        );
        assert_eq!(
            actions[4..],
            [
                Action::RaiseFloorsOfWholeTenants,
                Action::CloseInStore,
                Action::WriteBarrier(aborted),
                Action::Record,
            ]
        );
    }
}
