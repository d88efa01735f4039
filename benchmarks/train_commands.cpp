#include "train_commands.hpp"

#include <iostream>
#include <memory>

#include "train_cli.hpp"

namespace repro {

void register_train_commands(CLI::App& app) {
  auto train_options = std::make_shared<TrainOptions>();
  auto* train = app.add_subcommand("train", "train a model on a dataset, evaluate bits per dim");
  add_train_options(*train, *train_options);
  train->callback([train, train_options] {
    note_given_options(*train, *train_options);
    // Data parallel: rank 0 prints the summary (before it leaves the MPI job), the other ranks
    // get none.
    run_train(*train_options, [&](const nlohmann::json& summary) {
      std::cout << (train_options->json ? summary.dump(2) : train_summary_line(summary))
                << std::endl;
    });
  });

  auto eval_options = std::make_shared<EvalOptions>();
  auto* eval = app.add_subcommand("eval", "bits per dim of a checkpoint on a dataset split");
  add_eval_options(*eval, *eval_options);
  eval->callback([eval_options] {
    const nlohmann::json result = run_eval(*eval_options);
    std::cout << (eval_options->json ? result.dump(2) : eval_summary_line(result)) << "\n";
  });

  auto sample_options = std::make_shared<SampleOptions>();
  auto* sample = app.add_subcommand("sample", "generate a sequence from a checkpoint");
  add_sample_options(*sample, *sample_options);
  sample->callback([sample_options] {
    const nlohmann::json result = run_sample(*sample_options);
    std::cout << (sample_options->json ? result.dump(2) : sample_summary_line(result)) << "\n";
  });
}

}  // namespace repro
