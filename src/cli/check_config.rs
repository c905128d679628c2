//! `check-config`: validate the settings as `serve` would (the web configuration and token
//! files included) and print them with secrets redacted.

use super::{ConfigArgs, load_settings};

pub fn run(config: &ConfigArgs) -> anyhow::Result<()> {
    let settings = load_settings(config, |_| {})?;
    // The web configuration and token files are read as serve would read them.
    settings.server.security()?;
    if let Some(note) = settings.cloudwatch.per_user_cost_note() {
        eprintln!("warning: {note}");
    }
    print!("{}", settings.to_redacted_toml());
    Ok(())
}
