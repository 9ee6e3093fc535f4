using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using GptSharp.Checkpoints;
using GptSharp.Data;
using GptSharp.Distributed;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tokenization;
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
        public readonly Option<string?> Data = new("--data") { Description = "Training text: a .txt file, a directory or glob of .txt files, or a token file from `gptsharp prepare` (default: the bundled The Verdict)." };
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
        public readonly Option<int?> Threads = new("--threads") { Description = "Worker threads (default: all cores)." };
        public readonly Option<string?> Out = new("--out") { Description = "Run directory (default runs/<timestamp>)." };
        public readonly Option<string> Rng = new("--rng") { Description = "Random generator: torch (PyTorch's, prints the book's numbers) or fast.", DefaultValueFactory = _ => "torch" };
        public readonly Option<string?> Resume = new("--resume") { Description = "Continue a stopped run from its directory or checkpoint file (--epochs and --max-steps may be raised)." };

        // [distributed]
        public readonly Option<string> Distributed = new("--distributed") { Description = "auto: split the run over the processes when started by Open MPI's mpirun (global batch = --batch-size x ranks x --grad-accum), else one process; mpi: require mpirun; off: one process.", DefaultValueFactory = _ => DistributedTraining.Auto };

        public Options()
        {
            Rng.AcceptOnlyFromAmong("torch", "fast");
            Distributed.AcceptOnlyFromAmong([.. DistributedTraining.Modes]);
        }

        public IEnumerable<Option> All() =>
        [
            Data, Config, ContextLength, EmbDim, Layers, Heads, DropRate, QkvBias, BatchSize, Stride, Epochs, MaxSteps, Lr,
            WeightDecay, EvalFreq, EvalIter, Seed, StartContext, WarmupSteps, MinLr, GradClip, GradAccum, Threads, Out, Rng, Resume,
            Distributed,
        ];
    }

    /// <summary>What the command line asks for, before anything is loaded.</summary>
    internal sealed record Settings(RunConfig Config, int? Threads, string? Out, string? Resume, int? EpochsOverride, long? MaxStepsOverride,
        string Distributed = DistributedTraining.Auto);

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
        var model = ModelConfigs.FromPresetOrFile(parse.GetValue(o.Config)!);
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
        var config = new RunConfig
        {
            Model = model,
            Training = training,
            Data = string.IsNullOrEmpty(data) ? "" : Path.GetFullPath(data),
            BatchSize = batchSize,
            Stride = stride,
            LearningRate = lr,
            WeightDecay = weightDecay,
            Seed = parse.GetValue(o.Seed),
            Rng = parse.GetValue(o.Rng)!,
        };
        int? epochsOverride = parse.GetResult(o.Epochs) is { Implicit: false } ? training.Epochs : null;
        long? maxStepsOverride = parse.GetValue(o.MaxSteps);
        return new Settings(config, threads, parse.GetValue(o.Out), parse.GetValue(o.Resume), epochsOverride, maxStepsOverride, parse.GetValue(o.Distributed)!);
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
            Console.Error.WriteLine($"error: rank {parallel.Rank} of {parallel.WorldSize}: {e.Message}");
            parallel.Abort(1);
            return 1;
        }
    }

    private static int Execute(Settings settings, DataParallel parallel)
    {
        if (!parallel.IsRoot) Console.SetOut(TextWriter.Null); // [distributed] rank 0 alone prints
        if (settings.Threads is int threads) Workers.Count = threads;
        var tokenizer = Gpt2Tokenizer.Instance;
        bool live = !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

        GptModel model;
        AdamW optimizer;
        IRandomGenerator generator;
        TrainerState? state = null;
        RunConfig config;
        string runPath;
        if (settings.Resume is string resume)
        {
            string checkpointPath = TrainingRunCheckpoint.Resolve(resume);
            (model, optimizer, generator, var contents) = TrainingRunCheckpoint.Load(checkpointPath);
            state = contents.State;
            config = contents.Config;
            // A resumed run may be extended; everything else must stay as it was for an exact continuation.
            var training = config.Training;
            if (settings.EpochsOverride is int epochs) training = training with { Epochs = epochs };
            if (settings.MaxStepsOverride is long maxSteps) training = training with { MaxSteps = maxSteps };
            else if (training.MaxSteps is long reached && state.GlobalStep + 1 >= reached)
            {
                // The run stopped at its --max-steps: resuming without a new limit means "go on to the last epoch".
                Console.WriteLine($"The run stopped at --max-steps {reached}; continuing to the end of epoch {training.Epochs}.");
                training = training with { MaxSteps = null };
            }
            // [distributed] Keep the checkpoint's global batch on this world size (N ranks <-> --grad-accum N).
            var kept = parallel.KeepGlobalBatch(training, state.WorldSize);
            if (kept.GradAccum != training.GradAccum)
                Console.WriteLine($"The run was saved by {state.WorldSize} process(es) with --grad-accum {training.GradAccum}; continuing on {parallel.WorldSize} with --grad-accum {kept.GradAccum} (same global batch).");
            config = config with { Training = kept.Validate() };
            runPath = settings.Out ?? Path.GetDirectoryName(Path.GetFullPath(checkpointPath))!;
            Console.WriteLine($"Resuming {checkpointPath} at epoch {state.Epoch + 1}, step {state.GlobalStep + 1} ({state.TokensSeen:N0} tokens seen).");
        }
        else
        {
            config = settings.Config;
            generator = RandomGenerators.Create(config.Rng, config.Seed);
            model = new GptModel(config.Model, generator);
            optimizer = new AdamW(model.Parameters(), (float)config.LearningRate, (float)config.WeightDecay);
            runPath = settings.Out ?? RunDirectory.DefaultPath(DateTime.UtcNow);
        }

        // [distributed] Identical starting weights everywhere; each rank's own dropout stream.
        if (state is null) parallel.BroadcastParameters(model);
        else parallel.VerifyIdentical(model, "after loading the checkpoint");
        parallel.UseRankDropoutStream(model, config.Seed);

        using var modelOwner = model;
        using var optimizerOwner = optimizer;
        using var data = TrainingData.Load(config.Data, config.TrainRatio, tokenizer);
        var loaders = DataLoaders.CreateTrainValidation(data.Train, data.Validation, config.BatchSize, config.Model.ContextLength, config.Stride, generator);
        // [distributed] Every rank must run the same settings on the same data; rank 0 alone writes the run directory.
        parallel.VerifySameSettings($"{config.ToJson()}\n{data.Description}\n{state?.GlobalStep} {state?.NextBatch} {state?.TokensSeen} {state?.SamplerSeed}");
        var run = parallel.IsRoot ? new RunDirectory(runPath) : null;
        run?.WriteConfig(config);

        Console.WriteLine($"Data: {data.Description}");
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"Model: {config.Model.Layers} layers, {config.Model.Heads} heads, emb {config.Model.EmbeddingDim}, context {config.Model.ContextLength}, {model.ParameterCount:N0} parameters; {Workers.Count} threads, rng {generator.Kind}"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"Training: {loaders.Train.Count} batches of {config.BatchSize} x {config.Model.ContextLength} per epoch, {config.Training.Epochs} epochs; validation {loaders.Validation.Count} batches; run directory {run?.Path}"));
        if (parallel.IsDistributed) // [distributed]
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Distributed: {parallel.WorldSize} ranks x --batch-size {config.BatchSize} x --grad-accum {config.Training.GradAccum} = {parallel.WorldSize * config.BatchSize * config.Training.GradAccum} sequences per step (Open MPI)"));

        if (state is null && parallel.IsRoot) PrintInitialLosses(model, loaders, generator, config);

        var trainer = new Trainer(model, optimizer, loaders, config.Training, tokenizer, state, parallel);
        long tokensPerEpoch = (long)loaders.Train.Count * config.BatchSize * config.Model.ContextLength;
        // Ctrl+C (SIGINT) or SIGTERM: stop cleanly after the current step; a second signal ends the process at once.
        int stopRequests = 0;
        void OnSignal(PosixSignalContext context)
        {
            if (Interlocked.Increment(ref stopRequests) == 1)
            {
                context.Cancel = true;
                Console.Error.WriteLine("Stopping after the current step (press Ctrl+C again to quit at once)...");
            }
        }
        using var onInterrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var onTerminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        // [distributed] mpirun ends the job on Ctrl+C; `kill -USR1 <mpirun pid>` (forwarded to every rank) stops it cleanly.
        using var onUser1 = parallel.IsDistributed ? PosixSignalRegistration.Create((PosixSignal)10, OnSignal) : null;
        trainer.ShouldStop = () => Volatile.Read(ref stopRequests) > 0;

        var clock = Stopwatch.StartNew();
        long tokensAtStart = trainer.State.TokensSeen;
        TrainingOutcome outcome;
        try
        {
            trainer.Evaluated += _ => run?.WriteProgress(config, trainer.State, tokensPerEpoch);
            outcome = live ? RunWithProgressBar(trainer) : RunPlain(trainer);
        }
        catch (TrainingDivergedException)
        {
            run?.WriteProgress(config, trainer.State, tokensPerEpoch, "stopped: the loss diverged");
            throw;
        }
        double seconds = clock.Elapsed.TotalSeconds;
        long tokens = trainer.State.TokensSeen - tokensAtStart;

        string status = outcome switch
        {
            TrainingOutcome.Completed => "completed",
            TrainingOutcome.MaxStepsReached => $"stopped at --max-steps {config.Training.MaxSteps}",
            _ => "stopped by Ctrl+C (or SIGTERM)",
        };
        // [distributed] Check the ranks still agree bit for bit; rank 0 alone writes.
        parallel.VerifyIdentical(model, "at the end of training");
        trainer.State.WorldSize = parallel.WorldSize;
        if (run is not null)
        {
            model.Save(run.File(RunDirectory.ModelFile));
            TrainingRunCheckpoint.Save(run.File(TrainingRunCheckpoint.FileName), config, model, optimizer, generator, trainer.State);
            run.WriteProgress(config, trainer.State, tokensPerEpoch, status);
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"Training {status} in {seconds / 60:F2} minutes ({seconds:F1} s, {tokens / Math.Max(seconds, 1e-9):F0} tokens/s)."));
        if (outcome == TrainingOutcome.Stopped || outcome == TrainingOutcome.MaxStepsReached && trainer.State.Epoch < config.Training.Epochs)
            Console.WriteLine($"Checkpoint written; continue with: gptsharp train --resume {run?.Path}");
        Console.WriteLine($"Run directory: {run?.Path} (model.safetensors, {TrainingRunCheckpoint.FileName}, metrics.csv, loss.svg, report.html)");
        return 0;
    }

    /// <summary>
    /// The book's losses before training (section 5.1.3): <c>torch.manual_seed(123)</c>, then <c>calc_loss_loader</c> on both
    /// loaders. The book does this with a separately built model and re-seeds before training; building the same model
    /// again is what restoring the generator state after initialization amounts to.
    /// </summary>
    private static void PrintInitialLosses(GptModel model, TrainValidationLoaders loaders, IRandomGenerator generator, RunConfig config)
    {
        byte[] afterInit = generator.GetState();
        generator.ManualSeed(config.Seed);
        // The book evaluates every batch; a large corpus gets the eval_iter batches of an evaluation instead.
        int? batches = loaders.Train.Count <= 100 ? null : config.Training.EvalIter;
        model.Eval();
        double trainLoss = Pretraining.CalcLossLoader(loaders.Train, model, batches);
        double valLoss = Pretraining.CalcLossLoader(loaders.Validation, model, batches);
        model.Train();
        generator.SetState(afterInit);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Training loss: {trainLoss}"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Validation loss: {valLoss}"));
    }

    private static TrainingOutcome RunPlain(Trainer trainer)
    {
        trainer.Evaluated += e => Console.WriteLine(e.BookLine);
        trainer.Sampled += s => Console.WriteLine(s.Text);
        return trainer.Run();
    }

    private static TrainingOutcome RunWithProgressBar(Trainer trainer)
    {
        TrainingOutcome outcome = TrainingOutcome.Completed;
        AnsiConsole.Progress()
            .AutoClear(true)
            .HideCompleted(true)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                var task = context.AddTask("starting", maxValue: trainer.TotalSteps);
                task.Value = trainer.State.GlobalStep + 1;
                trainer.Evaluated += e => AnsiConsole.WriteLine(e.BookLine);
                trainer.Sampled += s => AnsiConsole.WriteLine(s.Text);
                trainer.StepCompleted += p =>
                {
                    task.Value = p.Step + 1;
                    task.Description = Markup.Escape(string.Create(CultureInfo.InvariantCulture,
                        $"Ep {p.Epoch} step {p.Step + 1}/{p.TotalSteps} loss {p.Loss:F3} {p.TokensPerSecond:F0} tok/s"));
                    context.Refresh();
                };
                outcome = trainer.Run();
            });
        return outcome;
    }
}
