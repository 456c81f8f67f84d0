//! geodns integration tests: the real server on ephemeral ports, a MaxMind DB written by the
//! test, real health endpoints, and DNS clients over UDP and TCP (a hickory-proto client and
//! dig).

mod answers;
mod badinput;
mod failover;
mod h3health;
mod support;
mod tools;
mod udpcache;
