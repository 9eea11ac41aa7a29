//! Mesos v1 wire formats.
