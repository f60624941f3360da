//! DeepSeek processors: `deepseek.balance` (the only billing data DeepSeek exposes).

pub mod balance;
