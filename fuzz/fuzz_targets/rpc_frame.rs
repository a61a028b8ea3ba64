//! A frame from the other generation on the restart socket: the header decoder, the whole-frame
//! decoder (with the fd count the header declares, so payloads get decoded), the payload
//! decoder, and the manifest checks that run on what decoded. Whatever decodes re-encodes and
//! decodes to the same message.
#![no_main]

use hotrestart_rpc::frame::{self, FrameHeader, HEADER_LEN};
use hotrestart_rpc::manifest::{self, BatchAssembler};
use hotrestart_rpc::{negotiate, Body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fds = match FrameHeader::decode(data) {
        Ok(h) => {
            assert!(h.fd_count <= frame::MAX_FDS_PER_FRAME && h.payload_len <= frame::MAX_PAYLOAD);
            assert_eq!(
                FrameHeader::decode(&h.encode().expect("re-encodes")).ok(),
                Some(h)
            );
            h.fd_count
        }
        Err(_) => 0,
    };
    let decoded = frame::decode(data, fds)
        .ok()
        .or_else(|| frame::decode_payload(data.get(HEADER_LEN..).unwrap_or(data)).ok());
    let Some(env) = decoded else {
        return;
    };
    let bytes = frame::encode(&env, fds).expect("a decoded message re-encodes");
    assert_eq!(frame::decode(&bytes, fds).expect("and decodes"), env);
    match &env.body {
        Some(Body::ListenSocketsReply(reply)) => {
            let _ = manifest::validate_batch(reply, fds);
            let _ = BatchAssembler::new().accept(reply, fds);
        }
        Some(Body::ConnectionsBatch(batch)) => {
            let _ = manifest::connection_fds(batch);
        }
        Some(Body::HelloReply(reply)) => {
            let _ = negotiate::check_reply(reply.clone());
        }
        _ => {}
    }
});
