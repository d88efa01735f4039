#include "memory_table_cmd.hpp"

#include <iostream>
#include <memory>
#include <string>

#include "memory_table.hpp"
#include "option_checks.hpp"
#include "output_files.hpp"
#include "provenance.hpp"
#include "report.hpp"

namespace repro {
namespace {

struct MemoryTableOptions {
  bool json = false, with_sparse = true, measure = false;
  int block = 64;
  std::string output;
};

}  // namespace

void register_memory_table(CLI::App& app, int argc, char** argv) {
  auto o = std::make_shared<MemoryTableOptions>();
  auto* mem = app.add_subcommand("memory-table", "the paper's attention-memory table");
  mem->add_flag("--json", o->json, "print JSON instead of Markdown");
  mem->add_flag("--sparse,!--no-sparse", o->with_sparse, "add the block-sparse columns");
  mem->add_option("--block", o->block, "block size of the sparse columns")
      ->check(one_of({"16", "32", "64", "128"}));
  mem->add_option("--output", o->output, "also write the table to this file");
  mem->add_flag("--measure,!--no-measure", o->measure,
                "measure this library's fused attention memory (one process per row)");
  mem->callback([o, argc, argv] {
    check_output_path(o->output, "--output");  // before the measurement, which takes a while
    const nlohmann::json prov = provenance(argc, argv);  // before the work: the load it found
    auto table = memory_table_json(o->with_sparse, o->block);
    if (o->measure) add_measured_memory(table, o->block);
    table["provenance"] = prov;
    const std::string text = o->json ? table.dump(2) + "\n" : memory_table_document(table);
    std::cout << text;
    if (!o->output.empty()) write_file_atomically(o->output, text);
  });
}

}  // namespace repro
