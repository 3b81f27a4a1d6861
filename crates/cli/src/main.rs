//! `whittle`: the command-line front end (run, resume, status, why, diff, gc).
fn main() {
    eprintln!("whittle: not yet implemented");
    std::process::exit(2);
}
