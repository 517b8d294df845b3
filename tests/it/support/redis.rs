//! Real `redis-server` processes for the integration tests: the library's own helper
//! (`keygate::store::redis::testing`), so the unit tests, these tests and the benches
//! start servers one way. A missing `redis-server` fails the test with the command that
//! installs it: never a silent skip.

pub use keygate::store::redis::testing::{RedisCluster, RedisServer};
