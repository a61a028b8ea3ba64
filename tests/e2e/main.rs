//! End-to-end tests: run the real `baton` binary against real upstreams on 127.0.0.1.
