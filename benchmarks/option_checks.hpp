// Range checks for the driver's numeric options. A value out of range, or not a number, is refused
// before any work with a message naming the option, the range and the value given, e.g.
// "--steps: must be an integer of at least 1, given 0".
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <limits>
#include <string>

namespace repro {

// Upper bound of the options stored as int; no upper bound of real options.
constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
constexpr double kInf = std::numeric_limits<double>::infinity();

// An integer in [lo, hi].
CLI::Validator integer_in(int64_t lo, int64_t hi = std::numeric_limits<int64_t>::max());
// A seed: decimal digits only, at most 2^64 - 1 (no sign, no hexadecimal, no wrap-around).
CLI::Validator seed_value();
// A number in [lo, hi] (hi_open: [lo, hi); lo_open: (lo, hi]).
CLI::Validator number_in(double lo, double hi, bool lo_open = false, bool hi_open = false);
// One of `names`, listed in the message.
CLI::Validator one_of(std::initializer_list<const char*> names);

// With no argument, a message listing the subcommands; when argv[1] is not an option and not a
// subcommand of `app`, a message naming it, the closest subcommand and the list; else empty.
std::string unknown_subcommand(const CLI::App& app, int argc, char** argv);

// When argv[1] is a subcommand of `app` and a later argument `--NAME` (or `--NAME=VALUE`, before
// any `--`) is none of its options, a message naming it, the closest option and the subcommand's
// --help; the same for an option of one value given twice (naming both values); else empty. Found
// before parsing, so a misspelt option is named even where it leaves a required option missing.
std::string unknown_option(const CLI::App& app, int argc, char** argv);

}  // namespace repro
