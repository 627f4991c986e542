//! Named load scenarios. Each one is a clap subcommand with its own arguments and prints a table.
//!
//! - [`fanout`]: N receivers on M channels, publishers broadcasting at a fixed total rate; measures
//!   connect+join latency, delivery latency and completeness, and server memory per connection.

pub mod fanout;
