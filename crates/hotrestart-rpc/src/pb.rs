//! The protobuf messages generated from `proto/hotrestart.proto` by prost-build (see `build.rs`),
//! plus small conveniences on them. The `.proto` file is the source of truth for the wire format.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/baton.hotrestart.v1.rs"));

use envelope::Body;

// === impl Envelope ===

impl Envelope {
    /// A message with request id `id` (or, for a reply, the id of the request it answers).
    pub fn new(id: u64, body: Body) -> Self {
        Self {
            id,
            body: Some(body),
        }
    }

    /// The body's name for logs and errors; "none" when there is no body this build knows.
    pub fn kind(&self) -> &'static str {
        self.body.as_ref().map_or("none", Body::kind)
    }
}

// === impl Body ===

impl Body {
    /// The message type's name, as in the `.proto` file.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Hello(_) => "hello",
            Body::HelloReply(_) => "hello_reply",
            Body::ListenSocketsRequest(_) => "listen_sockets_request",
            Body::ListenSocketsReply(_) => "listen_sockets_reply",
            Body::BatchAck(_) => "batch_ack",
            Body::DrainListeners(_) => "drain_listeners",
            Body::Terminate(_) => "terminate",
            Body::StatusReply(_) => "status_reply",
            Body::UnknownMessage(_) => "unknown_message",
            Body::StatsRequest(_) => "stats_request",
            Body::StatsSnapshot(_) => "stats_snapshot",
            Body::TakeConnections(_) => "take_connections",
            Body::ConnectionsBatch(_) => "connections_batch",
            Body::ConnectionsAck(_) => "connections_ack",
            Body::RollBack(_) => "roll_back",
            Body::GiveConnections(_) => "give_connections",
        }
    }
}
