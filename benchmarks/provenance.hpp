// Provenance of generated tables: which command, commit, date, machine and library made them.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace repro {

// Fields: command, commit, date_utc, cpu, logical_cpus, cuda_devices, library, build, and
// load_average_1min (the machine's 1-minute load average when this is called, where the system
// gives one): call it before the work, so that a figure taken on a loaded machine says so.
nlohmann::json provenance(int argc, char** argv);
// A Markdown table of the fields above (a load row only when the field is there: tables made
// before it was recorded render as they did).
std::string provenance_markdown(const nlohmann::json& provenance);
// The 1-minute load average (getloadavg), or a negative value where the system has none.
double load_average_1min();

}  // namespace repro
