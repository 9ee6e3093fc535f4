using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using GptSharp.Checkpoints;
using GptSharp.Data;
using GptSharp.Distributed;
using GptSharp.Evaluation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Training;
using Spectre.Console;

namespace GptSharp.Cli.Commands;

/// <summary>
/// <c>gptsharp train</c>: the book's chapter-5 pretraining. With no options it is the book's run: The Verdict,
/// GPT_CONFIG_124M with context 256, batch 2, AdamW lr 4e-4 wd 0.1, 10 epochs, eval_freq 5, eval_iter 5, seed 123,
/// PyTorch's random stream, so it prints the book's numbers.
/// </summary>
internal static class TrainCommand
{
    /// <summary>The options of <c>gptsharp train</c>, created once per command.</summary>
    internal sealed class Options
    {
        public readonly Option<string?> Data = new("--data") { Description = "Training data: text (a file, directory or glob of .txt, .jsonl/.json, .parquet, each optionally .gz/.zst) or token files (GptSharp's from `gptsharp prepare`, llm.c shards, nanoGPT's .bin; a glob for many) (default: the bundled The Verdict)." };
        public readonly Option<string?> ValData = new("--val-data") { Description = "Validation data in the same forms as --data (e.g. 'dir/*_val_*.bin'); replaces the 90/10 split of --data." };
        public readonly Option<string> TextColumn = new("--text-column") { Description = "Parquet column holding the text.", DefaultValueFactory = _ => "text" };
        public readonly Option<string> TextField = new("--text-field") { Description = "JSON Lines field holding the text.", DefaultValueFactory = _ => "text" };
        public readonly Option<string> Config = new("--config") { Description = $"Model preset ({string.Join(", ", GptConfig.PresetNames)}) or a JSON file with the book's keys.", DefaultValueFactory = _ => "124M" };
        public readonly Option<int?> ContextLength = new("--context-length") { Description = "Context length (default 256, the book's shortened GPT_CONFIG_124M)." };
        public readonly Option<int?> EmbDim = new("--emb-dim") { Description = "Embedding width." };
        public readonly Option<int?> Layers = new("--layers") { Description = "Transformer blocks." };
        public readonly Option<int?> Heads = new("--heads") { Description = "Attention heads." };
        public readonly Option<float?> DropRate = new("--drop-rate") { Description = "Dropout probability." };
        public readonly Option<bool?> QkvBias = new("--qkv-bias") { Description = "Biases on the query/key/value projections (true/false)." };
        public readonly Option<int> BatchSize = new("--batch-size") { Description = "Sequences per batch.", DefaultValueFactory = _ => 2 };
        public readonly Option<int?> Stride = new("--stride") { Description = "Distance between training windows (default: the context length, as the book)." };
        public readonly Option<int> Epochs = new("--epochs") { Description = "Passes over the training data.", DefaultValueFactory = _ => 10 };
        public readonly Option<long?> MaxSteps = new("--max-steps") { Description = "Stop after this many optimizer steps." };
        public readonly Option<double> Lr = new("--lr") { Description = "AdamW (peak) learning rate.", DefaultValueFactory = _ => 4e-4 };
        public readonly Option<double> WeightDecay = new("--weight-decay") { Description = "AdamW weight decay.", DefaultValueFactory = _ => 0.1 };
        public readonly Option<int> EvalFreq = new("--eval-freq") { Description = "Evaluate every N steps.", DefaultValueFactory = _ => 5 };
        public readonly Option<int> EvalIter = new("--eval-iter") { Description = "Batches per loader in each evaluation.", DefaultValueFactory = _ => 5 };
        public readonly Option<ulong> Seed = new("--seed") { Description = "Random seed (torch.manual_seed).", DefaultValueFactory = _ => 123UL };
        public readonly Option<string> StartContext = new("--start-context") { Description = "Prompt of the greedy sample after each epoch.", DefaultValueFactory = _ => "Every effort moves you" };
        public readonly Option<int> WarmupSteps = new("--warmup-steps") { Description = "Linear learning-rate warmup steps (Appendix D); 0 = off.", DefaultValueFactory = _ => 0 };
        public readonly Option<double?> MinLr = new("--min-lr") { Description = "Cosine-decay the learning rate to this value (Appendix D); off by default." };
        public readonly Option<double> GradClip = new("--grad-clip") { Description = "Clip the global gradient norm to this value once the warmup is over, as Appendix D does (it uses 1.0); 0 = off.", DefaultValueFactory = _ => 0.0 };
        public readonly Option<int> GradAccum = new("--grad-accum") { Description = "Micro-batches per optimizer step (gradient accumulation); 1 = off.", DefaultValueFactory = _ => 1 };
        public readonly Option<string?> EvalTask = new("--eval-task") { Description = "Score a benchmark during training, as NAME:FILE (hellaswag:hellaswag_val.jsonl or lambada:FILE; see `eval --task`): its accuracy goes into metrics.csv, report.html and the dashboard." };
        public readonly Option<int?> EvalTaskEvery = new("--eval-task-every") { Description = "Score --eval-task every N steps (a multiple of --eval-freq; default: at every evaluation)." };
        public readonly Option<int?> Threads = new("--threads") { Description = "Worker threads (default: all cores)." };
        public readonly Option<string?> Out = new("--out") { Description = "Run directory (default runs/<timestamp>)." };
        public readonly Option<string> Rng = new("--rng") { Description = "Random generator: torch (PyTorch's, prints the book's numbers) or fast.", DefaultValueFactory = _ => "torch" };
        public readonly Option<string?> Resume = new("--resume") { Description = "Continue a stopped run from its directory (its newest complete checkpoint) or a checkpoint file (--epochs and --max-steps may be raised)." };
        public readonly Option<string?> InitFrom = new("--init-from") { Description = "Start from existing weights: gpt2-small|gpt2-medium|gpt2-large|gpt2-xl (as `download` caches them), an OpenAI GPT-2 folder, the book's model.pth or model_and_optimizer.pth (AdamW state too), a .safetensors file or a run directory. The model's shape comes from the weights; --context-length may shorten it." };
        public readonly Option<long?> SaveEvery = new("--save-every") { Description = "Write a checkpoint every N optimizer steps (default: by time only)." };
        public readonly Option<double> SaveEveryMinutes = new("--save-every-minutes") { Description = "Write a checkpoint when this many minutes have passed since the last one; 0 = off.", DefaultValueFactory = _ => 10.0 };
        public readonly Option<int> KeepLast = new("--keep-last") { Description = "Checkpoints kept in the run directory (plus best.safetensors, the model of the lowest validation loss).", DefaultValueFactory = _ => 2 };

        // [distributed]
        public readonly Option<string> Distributed = new("--distributed") { Description = "auto: split the run over the processes when started by Open MPI's mpirun (global batch = --batch-size x ranks x --grad-accum), else one process; mpi: require mpirun; off: one process.", DefaultValueFactory = _ => DistributedTraining.Auto };

        public Options()
        {
            Rng.AcceptOnlyFromAmong("torch", "fast");
            Distributed.AcceptOnlyFromAmong([.. DistributedTraining.Modes]);
        }

        public IEnumerable<Option> All() =>
        [
            Data, ValData, TextColumn, TextField, Config, ContextLength, EmbDim, Layers, Heads, DropRate, QkvBias, BatchSize, Stride, Epochs, MaxSteps, Lr,
            WeightDecay, EvalFreq, EvalIter, Seed, StartContext, WarmupSteps, MinLr, GradClip, GradAccum, EvalTask, EvalTaskEvery, Threads, Out, Rng, Resume,
            SaveEvery, SaveEveryMinutes, KeepLast, InitFrom, Distributed,
        ];
    }

    /// <summary>What the command line asks for, before anything is loaded.</summary>
    internal sealed record Settings(RunConfig Config, int? Threads, string? Out, string? Resume, int? EpochsOverride, long? MaxStepsOverride,
        TrainingRunOptions Run, string Distributed = DistributedTraining.Auto);

    public static Command Create()
    {
        var options = new Options();
        var command = new Command("train", "Pretrain a GPT model (defaults: the book's chapter 5 run on The Verdict).");
        foreach (var option in options.All()) command.Options.Add(option);
        command.SetAction(parse => CliErrors.Run(() => Execute(ReadSettings(parse, options))));
        return command;
    }

    /// <summary>Parses <c>train</c> arguments into settings (used by tests).</summary>
    internal static Settings Parse(params string[] args)
    {
        var options = new Options();
        var command = new Command("train");
        foreach (var option in options.All()) command.Options.Add(option);
        var result = command.Parse(args);
        if (result.Errors.Count > 0) throw new ArgumentException(result.Errors[0].Message);
        return ReadSettings(result, options);
    }

    internal static Settings ReadSettings(ParseResult parse, Options o)
    {
        try
        {
            return ReadSettingsNamedByLibrary(parse, o);
        }
        catch (ArgumentException e)
        {
            // The options' own checks name properties (TrainingOptions.GradAccum): the user typed flags.
            throw new ArgumentException(CliFlags.Map(e.Message), e);
        }
    }

    private static Settings ReadSettingsNamedByLibrary(ParseResult parse, Options o)
    {
        string? initFrom = parse.GetValue(o.InitFrom);
        var model = initFrom is null ? ConfigOf(parse.GetValue(o.Config)!) : InitialModelConfig(parse, o, initFrom);
        model = model with
        {
            ContextLength = parse.GetValue(o.ContextLength) ?? model.ContextLength,
            EmbeddingDim = parse.GetValue(o.EmbDim) ?? model.EmbeddingDim,
            Layers = parse.GetValue(o.Layers) ?? model.Layers,
            Heads = parse.GetValue(o.Heads) ?? model.Heads,
            DropRate = parse.GetValue(o.DropRate) ?? model.DropRate,
            QkvBias = parse.GetValue(o.QkvBias) ?? model.QkvBias,
        };
        model.Validate();
        var training = new TrainingOptions
        {
            Epochs = parse.GetValue(o.Epochs),
            MaxSteps = parse.GetValue(o.MaxSteps),
            EvalFreq = parse.GetValue(o.EvalFreq),
            EvalIter = parse.GetValue(o.EvalIter),
            StartContext = parse.GetValue(o.StartContext)!,
            WarmupSteps = parse.GetValue(o.WarmupSteps),
            MinLr = parse.GetValue(o.MinLr),
            GradClip = parse.GetValue(o.GradClip),
            GradAccum = parse.GetValue(o.GradAccum),
            EvalTask = AbsoluteTaskSpec(parse.GetValue(o.EvalTask)),
            EvalTaskEvery = parse.GetValue(o.EvalTaskEvery),
        }.Validate();
        double lr = parse.GetValue(o.Lr), weightDecay = parse.GetValue(o.WeightDecay);
        if (!(lr > 0)) throw new ArgumentException($"--lr must be positive, got {lr}.");
        if (!(weightDecay >= 0)) throw new ArgumentException($"--weight-decay must be non-negative, got {weightDecay}.");
        int batchSize = parse.GetValue(o.BatchSize);
        if (batchSize <= 0) throw new ArgumentException($"--batch-size must be positive, got {batchSize}.");
        int stride = parse.GetValue(o.Stride) ?? model.ContextLength;
        if (stride <= 0) throw new ArgumentException($"--stride must be positive, got {stride}.");
        int? threads = parse.GetValue(o.Threads);
        if (threads is < 1) throw new ArgumentException($"--threads must be at least 1, got {threads}.");
        string? data = parse.GetValue(o.Data);
        string? validationData = parse.GetValue(o.ValData);
        var config = new RunConfig
        {
            Model = model,
            Training = training,
            Data = string.IsNullOrEmpty(data) ? "" : Path.GetFullPath(data),
            ValidationData = string.IsNullOrEmpty(validationData) ? null : Path.GetFullPath(validationData),
            Read = new CorpusReadOptions { TextColumn = parse.GetValue(o.TextColumn)!, TextField = parse.GetValue(o.TextField)! }.Validate(),
            BatchSize = batchSize,
            Stride = stride,
            LearningRate = lr,
            WeightDecay = weightDecay,
            Seed = parse.GetValue(o.Seed),
            Rng = parse.GetValue(o.Rng)!,
            InitFrom = initFrom,
        };
        int? epochsOverride = parse.GetResult(o.Epochs) is { Implicit: false } ? training.Epochs : null;
        long? maxStepsOverride = parse.GetValue(o.MaxSteps);
        var run = new TrainingRunOptions
        {
            SaveEverySteps = parse.GetValue(o.SaveEvery),
            SaveEveryMinutes = parse.GetValue(o.SaveEveryMinutes),
            KeepLast = parse.GetValue(o.KeepLast),
        }.Validate();
        return new Settings(config, threads, parse.GetValue(o.Out), parse.GetValue(o.Resume), epochsOverride, maxStepsOverride, run, parse.GetValue(o.Distributed)!);
    }

    /// <summary>NAME:FILE with FILE made absolute, so a resumed run finds it from any directory.</summary>
    private static string? AbsoluteTaskSpec(string? spec)
    {
        if (spec is null) return null;
        int colon = spec.IndexOf(':');
        if (colon <= 0 || colon == spec.Length - 1 || !BenchmarkTask.Names.Contains(spec[..colon]))
            throw new ArgumentException($"--eval-task '{spec}': expected NAME:FILE with NAME one of {string.Join(", ", BenchmarkTask.Names)} (e.g. hellaswag:hellaswag_val.jsonl).");
        return $"{spec[..colon]}:{Path.GetFullPath(spec[(colon + 1)..])}";
    }

    /// <summary>
    /// With --init-from the model's shape is the weights': the options that would change it are refused; the dropout rate
    /// stays the book's 0.1 unless --drop-rate says otherwise (the context length is shortened later by --context-length).
    /// </summary>
    private static GptConfig InitialModelConfig(ParseResult parse, Options o, string initFrom)
    {
        foreach (var option in new Option[] { o.Config, o.EmbDim, o.Layers, o.Heads, o.QkvBias })
            if (parse.GetResult(option) is { Implicit: false })
                throw new ArgumentException($"{option.Name} cannot be combined with --init-from: the model's shape comes from the weights.");
        if (parse.GetValue(o.Resume) is not null) throw new ArgumentException("--init-from starts a new run; --resume continues one: give one of them.");
        return GptConfig.FromCheckpoint(initFrom) with { DropRate = GptConfig.Book124M.DropRate };
    }

    /// <summary><c>--config</c>: a JSON file (the book's keys, GPT-2's, or a run's config.json), else a preset name (a path wins over a name).</summary>
    private static GptConfig ConfigOf(string value)
    {
        if (File.Exists(value)) return GptConfig.FromFile(value);
        try
        {
            return GptConfig.FromName(value);
        }
        catch (ArgumentException)
        {
            throw new ArgumentException($"--config: '{value}' is neither a preset ({string.Join(", ", GptConfig.PresetNames)}) nor a JSON file.");
        }
    }

    // [distributed] One process, or one rank of an mpirun job: a fatal error on a rank ends every rank (MPI_Abort)
    // with one line naming it, instead of leaving the others waiting in their next collective.
    private static int Execute(Settings settings)
    {
        using var parallel = DistributedTraining.Start(settings.Distributed);
        if (!parallel.IsDistributed) return Execute(settings, parallel);
        try
        {
            return Execute(settings, parallel);
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"error: rank {parallel.Rank} of {parallel.WorldSize}: {CliFlags.Map(e.Message)}");
            parallel.Abort(1);
            return 1;
        }
    }

    private static int Execute(Settings settings, DataParallel parallel)
    {
        if (settings.Threads is int threads) Workers.Count = threads;
        bool live = parallel.IsRoot && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;
        var options = settings.Run with { Directory = settings.Out };
        using var run = settings.Resume is string resume
            ? TrainingRun.Resume(resume, options with { Epochs = settings.EpochsOverride, MaxSteps = settings.MaxStepsOverride }, parallel)
            : TrainingRun.Start(settings.Config, options, parallel);

        // Ctrl+C (SIGINT) or SIGTERM: stop cleanly after the current step; a second signal ends the process at once.
        using var stop = new CancellationTokenSource();
        void OnSignal(PosixSignalContext context)
        {
            if (stop.IsCancellationRequested) return;
            context.Cancel = true;
            if (run.IsRoot) Console.Error.WriteLine("Stopping after the current step (press Ctrl+C again to quit at once)...");
            stop.Cancel();
        }
        using var onInterrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var onTerminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        // [distributed] mpirun ends the job on Ctrl+C; `kill -USR1 <mpirun pid>` (forwarded to every rank) stops it cleanly.
        using var onUser1 = parallel.IsDistributed ? PosixSignalRegistration.Create((PosixSignal)10, OnSignal) : null;

        TrainingOutcome outcome;
        try
        {
            if (live) outcome = RunWithProgressBar(run, stop.Token);
            else
            {
                run.Output += line => Console.WriteLine(CliFlags.Map(line));
                if (run.IsRoot) foreach (var line in Banner(run)) Console.WriteLine(line);
                outcome = run.Train(stop.Token);
            }
        }
        catch (IOException e) when (run.LastCheckpoint is not null)
        {
            throw new IOException($"{e.Message} Continue with: gptsharp train --resume {run.RunDirectory.Path}", e);
        }
        if (run.IsRoot && run.CanContinue(outcome)) Console.WriteLine($"Checkpoint written; continue with: gptsharp train --resume {run.RunDirectory.Path}");
        return 0;
    }

    /// <summary>What the run is about to do: its data, model, batches and (under mpirun) how the batch is split.</summary>
    internal static IEnumerable<string> Banner(TrainingRun run)
    {
        var c = run.Config;
        yield return $"Data: {run.DataDescription}";
        yield return string.Create(CultureInfo.InvariantCulture,
            $"Model: {c.Model.Layers} layers, {c.Model.Heads} heads, emb {c.Model.EmbeddingDim}, context {c.Model.ContextLength}, {run.Model.ParameterCount:N0} parameters; {Workers.Count} threads, rng {run.Generator.Kind}");
        yield return string.Create(CultureInfo.InvariantCulture,
            $"Training: {run.Loaders.Train.Count} batches of {c.BatchSize} x {c.Model.ContextLength} per epoch, {c.Training.Epochs} epochs; validation {run.Loaders.Validation.Count} batches; run directory {run.RunDirectory.Path}");
        if (run.Parallel.IsDistributed)
            yield return string.Create(CultureInfo.InvariantCulture,
                $"Distributed: {run.Parallel.WorldSize} ranks x --batch-size {c.BatchSize} x --grad-accum {c.Training.GradAccum} = {run.Parallel.WorldSize * c.BatchSize * c.Training.GradAccum} sequences per step (Open MPI)");
    }

    private static TrainingOutcome RunWithProgressBar(TrainingRun run, CancellationToken cancellationToken)
    {
        var trainer = run.Trainer;
        var outcome = TrainingOutcome.Completed;
        foreach (var line in Banner(run)) AnsiConsole.WriteLine(line);
        LiveProgress.Run(context =>
            {
                var task = context.AddTask("starting", maxValue: trainer.TotalSteps);
                task.Value = trainer.State.GlobalStep + 1;
                run.Output += line => AnsiConsole.WriteLine(CliFlags.Map(line));
                trainer.StepCompleted += p =>
                {
                    task.Value = p.Step + 1;
                    task.Description = Markup.Escape(string.Create(CultureInfo.InvariantCulture,
                        $"Ep {p.Epoch} step {p.Step + 1}/{p.TotalSteps} loss {p.Loss:F3} {p.TokensPerSecond:F0} tok/s"));
                    context.Refresh();
                };
                outcome = run.Train(cancellationToken);
            });
        return outcome;
    }
}
