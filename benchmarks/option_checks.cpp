#include "option_checks.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>
#include <sstream>
#include <vector>

namespace repro {
namespace {

constexpr int64_t kNoBound = std::numeric_limits<int64_t>::max();

std::string format_number(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

std::string integer_range_text(int64_t lo, int64_t hi) {
  if (hi == kNoBound) return "an integer of at least " + std::to_string(lo);
  return "an integer from " + std::to_string(lo) + " to " + std::to_string(hi);
}

// The range as a person reads it: the int limit is left out unless a value passes it.
std::string short_range_text(int64_t lo, int64_t hi) {
  return hi == kIntMax ? integer_range_text(lo, kNoBound) : integer_range_text(lo, hi);
}

// Levenshtein distance, for suggesting the subcommand a typo meant.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// The candidate nearest `given` by edit distance when it is close enough to be a misspelling of
// it (at most 2 edits, or a third of its length); else empty.
std::string closest(const std::string& given, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::string::npos;
  for (const std::string& name : candidates) {
    const size_t d = edit_distance(given, name);
    if (d < best_distance) best_distance = d, best = name;
  }
  return best_distance <= std::max<size_t>(2, given.size() / 3) ? best : std::string();
}

}  // namespace

CLI::Validator integer_in(int64_t lo, int64_t hi) {
  const std::string range = integer_range_text(lo, hi), brief = short_range_text(lo, hi);
  return CLI::Validator(
      [lo, hi, range, brief](std::string& value) -> std::string {
        errno = 0;
        char* end = nullptr;
        const long long x = std::strtoll(value.c_str(), &end, 10);
        if (value.empty() || end == value.c_str() || *end != '\0')
          return "must be " + brief + ", given \"" + value + "\"";
        if (x < lo) return "must be " + brief + ", given " + value;
        if (errno == ERANGE || x > hi) return "must be " + range + ", given " + value;
        return {};
      },
      brief);
}

CLI::Validator seed_value() {
  const std::string brief = "a whole number in [0, 2^64 - 1]";
  return CLI::Validator(
      [brief](std::string& value) -> std::string {
        // Decimal digits only: strtoull would take "-1" as 2^64 - 1 and CLI11 "0x10" as 16.
        const bool digits =
            !value.empty() && value.find_first_not_of("0123456789") == std::string::npos;
        errno = 0;
        if (digits) std::strtoull(value.c_str(), nullptr, 10);
        if (!digits || errno == ERANGE) return "must be " + brief + ", given \"" + value + "\"";
        return {};
      },
      brief);
}

CLI::Validator number_in(double lo, double hi, bool lo_open, bool hi_open) {
  std::string range;
  if (std::isinf(hi))
    range =
        std::string("a number ") + (lo_open ? "greater than " : "of at least ") + format_number(lo);
  else
    range = "a number in " + std::string(lo_open ? "(" : "[") + format_number(lo) + ", " +
            format_number(hi) + (hi_open ? ")" : "]");
  return CLI::Validator(
      [lo, hi, lo_open, hi_open, range](std::string& value) -> std::string {
        char* end = nullptr;
        const double x = std::strtod(value.c_str(), &end);
        if (value.empty() || end == value.c_str() || *end != '\0' || !std::isfinite(x))
          return "must be " + range + ", given \"" + value + "\"";
        if (x < lo || (lo_open && x == lo) || x > hi || (hi_open && x == hi))
          return "must be " + range + ", given " + value;
        return {};
      },
      range);
}

CLI::Validator one_of(std::initializer_list<const char*> names) {
  std::vector<std::string> list(names.begin(), names.end());
  std::string text;
  for (size_t i = 0; i < list.size(); ++i)
    text += (i == 0 ? "" : i + 1 == list.size() ? " or " : ", ") + list[i];
  return CLI::Validator(
      [list, text](std::string& value) -> std::string {
        if (std::find(list.begin(), list.end(), value) != list.end()) return {};
        return "must be " + text + ", given \"" + value + "\"";
      },
      text);
}

std::string unknown_subcommand(const CLI::App& app, int argc, char** argv) {
  if (argc < 2) {
    std::string names;
    for (const CLI::App* sub : app.get_subcommands({}))
      names += (names.empty() ? "" : ", ") + sub->get_name();
    return "say what to do: sparse-repro SUBCOMMAND [options]\nsubcommands: " + names +
           "\n(sparse-repro SUBCOMMAND --help for its options, sparse-repro --help for what each "
           "does)";
  }
  if (argv[1][0] == '-') return {};
  const std::string given = argv[1];
  std::string names;
  std::vector<std::string> candidates;
  for (const CLI::App* sub : app.get_subcommands({})) {
    const std::string& name = sub->get_name();
    if (name == given) return {};
    names += (names.empty() ? "" : ", ") + name;
    candidates.push_back(name);
  }
  std::string message = "unknown subcommand \"" + given + "\"";
  const std::string best = closest(given, candidates);
  if (!best.empty()) message += "; did you mean \"" + best + "\"?";
  return message + "\nsubcommands: " + names + "\n(sparse-repro SUBCOMMAND --help for its options)";
}

std::string unknown_option(const CLI::App& app, int argc, char** argv) {
  if (argc < 3 || argv[1][0] == '-') return {};
  const CLI::App* command = nullptr;
  for (const CLI::App* sub : app.get_subcommands({}))
    if (sub->get_name() == argv[1]) command = sub;
  if (command == nullptr) return {};
  const std::string subcommand = command->get_name();
  const std::string help = "\n(sparse-repro " + subcommand + " --help lists its options)";
  std::map<const CLI::Option*, std::string> single_values;  // the first value of each
  for (int i = 2; i < argc; ++i) {
    std::string argument = argv[i];
    if (argument == "--") break;
    // A long name written with one dash, or with an en or em dash (text copied from a document
    // that typeset "--"): CLI11 would take it for short options, or for an unexpected word, and
    // report only the required option it leaves missing. Values such as -5 or -1e-3 begin with a
    // digit or a dot; a known short option (-h, or one with its value attached) is left to CLI11.
    std::string dash;
    for (const char* d : {"\u2014", "\u2013"})
      if (argument.compare(0, std::char_traits<char>::length(d), d) == 0) dash = d;
    if (!dash.empty()) {
      const std::string rest = argument.substr(dash.size());
      return subcommand + ": \"" + argument.substr(0, argument.find('=')) + "\" begins with \"" +
             dash + "\" (a typographic dash), not \"--\"; did you mean \"--" +
             rest.substr(0, rest.find('=')) + "\"?" + help;
    }
    // Whether this argument is the value of the option before it (--out a=b, --temperature -inf).
    const std::string before = argv[i - 1];
    const CLI::Option* previous =
        i > 2 && before.size() > 1 && before[0] == '-' && before.find('=') == std::string::npos
            ? command->get_option_no_throw(before)
            : nullptr;
    const bool is_value = previous != nullptr && previous->get_items_expected_min() > 0;
    // An option given where the one before it expects its value: CLI11 takes it as that value
    // (--checkpoint --quiet saved the checkpoint as a file named "--quiet").
    if (is_value && argument.size() > 2 && argument.compare(0, 2, "--") == 0)
      return subcommand + ": " + before + " needs a value, but the argument after it is \"" +
             argument + "\"" +
             (command->get_option_no_throw(argument.substr(0, argument.find('=')))
                  ? ", another option"
                  : "") +
             " (a value that begins with \"--\" is given as " + before + "=VALUE)" + help;
    if (is_value) continue;
    // "name=value" with no dash at all (as in a config file or a Python call): CLI11 reports an
    // unexpected argument, or only the required option it leaves missing.
    const size_t equals = argument.find('=');
    if (argument[0] != '-' && equals != std::string::npos && equals > 0 &&
        command->get_option_no_throw("--" + argument.substr(0, equals)) != nullptr)
      return subcommand + ": \"" + argument + "\" has no leading \"--\"; did you mean \"--" +
             argument + "\"?" + help;
    const bool one_dash = argument.size() > 2 && argument[0] == '-' && argument[1] != '-' &&
                          std::isalpha(static_cast<unsigned char>(argument[1])) &&
                          command->get_option_no_throw(argument.substr(0, 2)) == nullptr;
    if (one_dash)
      argument = "-" + argument;
    else if (argument.size() <= 2 || argument.compare(0, 2, "--") != 0)
      continue;
    const std::string given = argument.substr(0, argument.find('='));
    if (const CLI::Option* option = command->get_option_no_throw(given)) {
      if (one_dash)
        return subcommand + ": \"" + given.substr(1) + "\" has one dash; did you mean \"" + given +
               "\"?" + help;
      // An option of one value given twice: CLI11 says only "At Most 1 required but received 2".
      // (List options, such as --n 128,256, take every occurrence; flags may repeat.)
      if (option->get_items_expected_min() == 1 && option->get_items_expected_max() == 1) {
        // The value as given: after '=', else the next argument unless it is missing or another
        // option (which CLI11 reports as a missing value).
        const size_t eq = argument.find('=');
        std::string value = "with no value";
        if (eq != std::string::npos)
          value = eq + 1 < argument.size() ? argument.substr(eq + 1) : "\"\"";
        else if (i + 1 < argc && std::string(argv[i + 1]).compare(0, 2, "--") != 0)
          value = argv[i + 1];
        auto [at, first] = single_values.emplace(option, value);
        if (!first)
          return subcommand + ": " + given + " is given twice (" + at->second + ", then " + value +
                 "); give it once" + help;
      }
      continue;
    }
    // The closest option by edit distance, or the one option the given name begins or extends.
    std::vector<std::string> candidates;
    std::string prefix_of;
    int prefixes = 0;
    for (const CLI::Option* option : command->get_options()) {
      for (const std::string& long_name : option->get_lnames()) {
        const std::string name = "--" + long_name;
        candidates.push_back(name);
        if (name.compare(0, given.size(), given) == 0 || given.compare(0, name.size(), name) == 0)
          ++prefixes, prefix_of = name;
      }
    }
    std::string message =
        subcommand + ": unknown option \"" + (one_dash ? given.substr(1) : given) + "\"";
    const std::string best = closest(given, candidates);
    if (!best.empty())
      message += "; did you mean \"" + best + "\"?";
    else if (prefixes == 1)
      message += "; did you mean \"" + prefix_of + "\"?";
    return message + help;
  }
  return {};
}

}  // namespace repro
