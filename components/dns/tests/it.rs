//! Integration tests of `capstan dns`: a running server queried over UDP, TCP and HTTP, fed by
//! a fake master's operator event stream, forwarding to fake upstreams on loopback.

mod it {
    pub mod support;

    mod dig;
    mod dns;
    mod failover;
    mod forward;
    mod http;
    mod real_master;
    mod stream;
    mod strict;
}
