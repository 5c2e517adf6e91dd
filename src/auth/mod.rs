//! Authentication: SASL responses decoded into credentials. (Users,
//! password hashes and permissions join this module with the management
//! API.)

pub mod sasl;
