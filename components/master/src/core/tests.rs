//! Table tests of the core, driven without sockets (see below).
