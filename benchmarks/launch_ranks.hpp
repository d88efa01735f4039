// Which ranks of an MPI launch (mpirun -np N, srun -n N, or a job script's SLURM variables) run a
// subcommand. Only train divides its work among the ranks (data_parallel.hpp). Every other
// subcommand is a one-process job: rank 0 does it, once, as a plain process (it forgets the
// launcher's variables, so that the models main, table1 and presets train do not join an MPI job,
// and the processes it starts see no launch either) and says so in one line on stderr; the other
// ranks do nothing and exit 0 at once, without output. A job script can so run train, then eval
// and sample, under the same launch, and gets one result and one file of each.
#pragma once

#include <string>

namespace repro {

// The help text of that rule, for --help.
extern const char* const kOneProcessNote;

// Whether this process runs `subcommand` (false: exit now, with status 0 and no output); see
// above.
bool runs_on_this_rank(const std::string& subcommand);

// Whether this process prints a command-line error (an unknown subcommand or option, a bad value,
// --help): every rank of a launch parses the same arguments, so only rank 0 prints (one message,
// not one per rank); the other ranks exit with the same status, silently. Exceptions, whose
// arguments rank 0 does not see: the first rank of each further command line of an MPMD launch
// (mpirun A : B), and SLURM variables with no srun behind them (no SLURM_STEP_ID). Errors found
// later, while a rank works, are printed by that rank.
bool prints_usage_errors();
// The exit of a rank that does not print its error: `status`, after a pause when it is non-zero,
// so that rank 0 has printed before the launcher, seeing a failed rank, stops the job.
int silent_exit(int status);

}  // namespace repro
