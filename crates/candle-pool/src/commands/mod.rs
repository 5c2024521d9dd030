//! One module per subcommand.

pub mod embed;
pub mod generate;
pub mod list;
pub mod plan;
pub mod pull;
pub mod report;
pub mod serve;
pub mod text_to_image;
