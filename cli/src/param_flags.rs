//! The render parameters as flags of `pastiche render`, one per entry of the
//! parameter table: `--style-weight 1e5` (or `PASTICHE_STYLE_WEIGHT`), each
//! parsed, named and documented as the table says.

use clap::{Arg, ArgMatches, Command};
use pastiche_spec::params::table::Value;
use pastiche_spec::{Param, ParamError, RenderParams, PARAMS};

/// The parameters given on the command line (or in the environment).
#[derive(Debug, Clone, Default)]
pub struct ParamFlags(Vec<(&'static Param, Value)>);

impl ParamFlags {
    /// The render: the values given, every other parameter at its default.
    pub fn params(&self) -> Result<RenderParams, ParamError> {
        let params = RenderParams::with_values(|param| {
            self.0
                .iter()
                .find(|(given, _)| *given == param)
                .map(|(_, value)| value)
        })?;
        params.validate()?;
        Ok(params)
    }
}

/// `style_weight` as `--style-weight`.
fn flag(name: &str) -> String {
    name.replace('_', "-")
}

impl clap::FromArgMatches for ParamFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(ParamFlags(
            PARAMS
                .iter()
                .filter_map(|param| Some((param, matches.get_one::<Value>(param.name)?.clone())))
                .collect(),
        ))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for ParamFlags {
    fn augment_args(command: Command) -> Command {
        PARAMS
            .iter()
            .fold(command, |command, param: &'static Param| {
                let arg = Arg::new(param.name)
                    .long(flag(param.name))
                    .aliases(param.aliases.iter().map(|a| flag(a)))
                    .env(format!("PASTICHE_{}", param.name.to_ascii_uppercase()))
                    .value_name(param.name.to_ascii_uppercase())
                    .help(format!(
                        "{} [default: {}]",
                        param.help,
                        param.default_text()
                    ))
                    .value_parser(move |text: &str| param.parse(text));
                // `--original-colors` alone turns it on.
                let arg = if param.is_switch() {
                    arg.num_args(0..=1).default_missing_value("true")
                } else {
                    arg
                };
                command.arg(arg)
            })
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}
