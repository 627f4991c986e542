//! Named load scenarios. Each one is a clap subcommand with its own arguments and prints a table.
//!
//! - [`fanout`]: N receivers on M channels, publishers broadcasting at a fixed total rate; measures
//!   connect+join latency, delivery latency and completeness, and server memory per connection.
//! - [`cdc`]: K Postgres Changes subscribers (with or without RLS), rows inserted at a fixed rate;
//!   measures insert/commit → client latency, changes decoded, authorised deliveries, leaks.

pub mod cdc;
pub mod fanout;
