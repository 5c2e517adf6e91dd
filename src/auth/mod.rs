//! Authentication: SASL responses decoded into credentials, and password
//! hashes in RabbitMQ's format. (Users and permissions at run time join
//! this module with the management API.)

pub mod access;
pub mod attempts;
pub mod password;
pub mod sasl;
