// Provenance of generated tables: which command, commit, date, machine and library made them.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace repro {

// Fields: command, commit, date_utc, cpu, logical_cpus, gpu, library, build.
nlohmann::json provenance(int argc, char** argv);
// A Markdown table of the fields above.
std::string provenance_markdown(const nlohmann::json& provenance);

}  // namespace repro
