//! Fixtures shared by the edge's integration tests: a scripted origin, real HTTP clients, and
//! the edge itself, in-process or as a child process.

#![allow(dead_code, unreachable_pub)]

pub mod client;
pub mod edge;
pub mod h3client;
pub mod nats;
pub mod origin;
