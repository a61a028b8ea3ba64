//! Version negotiation, sans-IO: what the child says in its Hello, how the parent answers it, and
//! how the child reads the answer. A mismatch is a refusal with a reason the child can print, never
//! an abort on either side.

use crate::error::{Error, Result};
use crate::pb::{Hello, HelloReply, ParentState, RefusalReason};
use crate::PROTOCOL_VERSION;

/// True if this build can talk to a peer speaking `version`.
pub fn supports(version: u32) -> bool {
    version == PROTOCOL_VERSION
}

/// The Hello a child running as `epoch` (0: "the parent's epoch + 1", see the `.proto`) sends.
pub fn hello(hot_restart_version: &str, epoch: u32, pid: u32) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        hot_restart_version: hot_restart_version.to_owned(),
        epoch,
        pid,
    }
}

/// The parent's answer to `hello`, given its own hot restart version and state. Accepts only a
/// child speaking a supported protocol, the same hot restart version, and running as the parent's
/// epoch + 1 (or leaving its epoch to the parent).
pub fn answer_hello(hot_restart_version: &str, state: &ParentState, hello: &Hello) -> HelloReply {
    let refusal = if !supports(hello.protocol_version) {
        Some((
            RefusalReason::ProtocolVersion,
            format!(
                "child speaks protocol version {}, parent speaks {}",
                hello.protocol_version, PROTOCOL_VERSION
            ),
        ))
    } else if hello.hot_restart_version != hot_restart_version {
        Some((
            RefusalReason::HotRestartVersion,
            format!(
                "child hot restart version {:?} differs from parent's {:?}",
                hello.hot_restart_version, hot_restart_version
            ),
        ))
    } else if state.epoch == u32::MAX {
        Some((
            RefusalReason::Epoch,
            format!("the parent is epoch {}, the last there is", state.epoch),
        ))
    } else if hello.epoch != 0 && hello.epoch != state.epoch + 1 {
        Some((
            RefusalReason::Epoch,
            format!(
                "child runs as epoch {} but the parent is epoch {} (expected {})",
                hello.epoch,
                state.epoch,
                u64::from(state.epoch) + 1
            ),
        ))
    } else {
        None
    };
    match refusal {
        Some((reason, detail)) => refuse(hot_restart_version, reason, detail),
        None => HelloReply {
            accepted: true,
            reason: RefusalReason::Unspecified.into(),
            detail: String::new(),
            protocol_version: PROTOCOL_VERSION,
            hot_restart_version: hot_restart_version.to_owned(),
            state: Some(state.clone()),
        },
    }
}

/// A refusal carrying what the parent speaks.
pub fn refuse(hot_restart_version: &str, reason: RefusalReason, detail: String) -> HelloReply {
    HelloReply {
        accepted: false,
        reason: reason.into(),
        detail,
        protocol_version: PROTOCOL_VERSION,
        hot_restart_version: hot_restart_version.to_owned(),
        state: None,
    }
}

/// The child's reading of the parent's answer: the parent's state, or a typed refusal.
pub fn check_reply(reply: HelloReply) -> Result<ParentState> {
    if !reply.accepted {
        let reason = RefusalReason::try_from(reply.reason).unwrap_or(RefusalReason::Unspecified);
        return Err(Error::Refused {
            reason,
            detail: reply.detail,
        });
    }
    if !supports(reply.protocol_version) {
        return Err(Error::Refused {
            reason: RefusalReason::ProtocolVersion,
            detail: format!(
                "parent accepted but speaks protocol version {}, child speaks {}",
                reply.protocol_version, PROTOCOL_VERSION
            ),
        });
    }
    reply.state.ok_or(Error::UnexpectedMessage {
        expected: "hello_reply with the parent's state",
        got: "hello_reply without state",
    })
}

/// The epoch a child runs as once `parent` accepted it.
pub fn child_epoch(parent: &ParentState) -> Option<u32> {
    parent.epoch.checked_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ParentState {
        ParentState {
            chain_start_unix_ms: 1_700_000_000_000,
            epoch: 4,
            pid: 100,
            concurrency: 2,
            server_version: "baton test".into(),
            draining: false,
            ..ParentState::default()
        }
    }

    #[test]
    fn accepts_matching_child() {
        let reply = answer_hello("v1", &state(), &hello("v1", 5, 200));
        assert!(reply.accepted);
        assert_eq!(check_reply(reply).unwrap(), state());
        let reply = answer_hello("v1", &state(), &hello("v1", 0, 200));
        assert_eq!(child_epoch(&check_reply(reply).unwrap()), Some(5));
    }

    #[test]
    fn wrong_protocol_version_is_refused_loudly() {
        let mut h = hello("v1", 5, 200);
        h.protocol_version = PROTOCOL_VERSION + 1;
        let reply = answer_hello("v1", &state(), &h);
        assert!(!reply.accepted);
        let err = check_reply(reply).unwrap_err();
        assert!(matches!(
            err,
            Error::Refused {
                reason: RefusalReason::ProtocolVersion,
                ..
            }
        ));
        assert!(err.to_string().contains("protocol version 2"), "{err}");
    }

    #[test]
    fn other_refusals() {
        let err = check_reply(answer_hello("v1", &state(), &hello("v2", 5, 1))).unwrap_err();
        assert!(matches!(
            err,
            Error::Refused {
                reason: RefusalReason::HotRestartVersion,
                ..
            }
        ));
        for epoch in [1, 4, 6, u32::MAX] {
            let err =
                check_reply(answer_hello("v1", &state(), &hello("v1", epoch, 1))).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Refused {
                        reason: RefusalReason::Epoch,
                        ..
                    }
                ),
                "epoch {epoch}"
            );
        }
        let mut last = state();
        last.epoch = u32::MAX;
        assert!(!answer_hello("v1", &last, &hello("v1", 0, 1)).accepted);
        assert_eq!(child_epoch(&last), None);
    }

    #[test]
    fn accepted_without_state_is_an_error() {
        let mut reply = answer_hello("v1", &state(), &hello("v1", 5, 1));
        reply.state = None;
        assert!(matches!(
            check_reply(reply),
            Err(Error::UnexpectedMessage { .. })
        ));
    }
}
