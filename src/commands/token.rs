//! `gridprobe token new|hash`: bearer tokens for the API, stored in the config only as hashes.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use gridprobe_runner::access::sha256_hex;

/// `gridprobe token`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

/// What `gridprobe token` does.
#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Generate a random token; prints the token (give it to its holder) and its SHA-256 (put it
    /// in the config).
    New,
    /// Print the SHA-256 of the token read from standard input.
    Hash,
}

/// Makes a token (`new`) or hashes one from standard input (`hash`).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if matches!(args.action, Action::New) {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .context("reading /dev/urandom for a random token")?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        println!("token:  {token}");
        println!("sha256: {}", sha256_hex(&token));
        eprintln!("give the token to its holder; put only the sha256 in [[access.token]]");
        return Ok(ExitCode::SUCCESS);
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the token from standard input")?;
    let token = input.trim();
    if token.is_empty() {
        eprintln!("error: no token on standard input (e.g. `printf %s \"$TOKEN\" | gridprobe token hash`)");
        return Ok(ExitCode::from(2));
    }
    println!("{}", sha256_hex(token));
    Ok(ExitCode::SUCCESS)
}
