using System.Diagnostics;
using System.Globalization;
using GptSharp.Checkpoints;
using GptSharp.Data;
using GptSharp.Evaluation;
using GptSharp.Formats;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.IO;
using GptSharp.Tokenization;
using GptSharp.Randomness;

namespace GptSharp.Training;

/// <summary>How a <see cref="TrainingRun"/> keeps itself on disk (and, on a resume, how far it may be extended).</summary>
public sealed record TrainingRunOptions
{
    /// <summary>The run directory; null: <c>runs/&lt;UTC timestamp&gt;</c> for a new run, the checkpoint's directory on a resume.</summary>
    public string? Directory { get; init; }

    /// <summary>Write a checkpoint every this many optimizer steps (null: by time only).</summary>
    public long? SaveEverySteps { get; init; }

    /// <summary>Write a checkpoint when this many minutes have passed since the last one; 0 = off.</summary>
    public double SaveEveryMinutes { get; init; } = 10;

    /// <summary>Checkpoints kept in the run directory (older ones are deleted once a newer one is on disk).</summary>
    public int KeepLast { get; init; } = 2;

    /// <summary>On a resume: a new number of epochs (the run may be extended).</summary>
    public int? Epochs { get; init; }

    /// <summary>On a resume: a new <c>--max-steps</c>.</summary>
    public long? MaxSteps { get; init; }

    public TrainingRunOptions Validate()
    {
        if (SaveEverySteps is <= 0) throw new ArgumentException($"TrainingRunOptions.SaveEverySteps must be positive, got {SaveEverySteps}.");
        if (!(SaveEveryMinutes >= 0)) throw new ArgumentException($"TrainingRunOptions.SaveEveryMinutes must be non-negative (0 = off), got {SaveEveryMinutes}.");
        if (KeepLast < 1) throw new ArgumentException($"TrainingRunOptions.KeepLast must be at least 1, got {KeepLast}.");
        if (Epochs is <= 0) throw new ArgumentException($"TrainingRunOptions.Epochs must be positive, got {Epochs}.");
        if (MaxSteps is <= 0) throw new ArgumentException($"TrainingRunOptions.MaxSteps must be positive, got {MaxSteps}.");
        return this;
    }
}

/// <summary>
/// One training run as an object: the book's chapter 5 (<c>train_model_simple</c> with its initial losses, evaluations,
/// samples and plots) plus what a long run needs: a run directory, periodic crash-safe checkpoints (every
/// <see cref="TrainingRunOptions.SaveEverySteps"/> steps and/or <see cref="TrainingRunOptions.SaveEveryMinutes"/>, at the
/// end, on cancellation and before a diverged-loss stop), the last <see cref="TrainingRunOptions.KeepLast"/> of them kept,
/// <c>best.safetensors</c> (the weights of the lowest validation loss), a bit-identical <see cref="Resume"/>, and a
/// breakdown of where the time went (<see cref="Timings"/>, <c>timings.json</c>). Split over the ranks of an Open MPI job
/// (<see cref="DataParallel"/>), every rank trains its share of each step and rank 0 alone prints and writes (<see cref="IsRoot"/>).
/// <code>
/// using var run = TrainingRun.Start(new RunConfig { Model = GptConfig.Book124M, Training = new TrainingOptions() });
/// run.Output += Console.WriteLine;
/// run.Train();
/// </code>
/// </summary>
public sealed class TrainingRun : IDisposable
{
    /// <summary>The model with the lowest validation loss so far (model only).</summary>
    public const string BestModelFile = "best.safetensors";

    /// <summary>Where the time of the last session went.</summary>
    public const string TimingsFile = "timings.json";

    private readonly TrainingRunOptions _options;
    private readonly DataParallel _parallel;
    private readonly TrainingData _data;
    private readonly List<string> _pendingLines = [];
    private readonly long _tokensPerEpoch;
    private readonly TimeSpan _setupDataTime;
    private readonly BestModelWriter? _bestWriter;
    private readonly BenchmarkTask? _evalTask;
    private readonly IDisposable? _directoryLock;
    private double _bestValLoss;
    private long _lastCheckpointTimestamp;
    private LastGoodStep _lastGood;

    private TrainingRun(RunConfig config, TrainingRunOptions options, DataParallel parallel, RunDirectory directory, GptModel model, AdamW optimizer,
        IRandomGenerator generator, TrainerState? state)
    {
        _options = options;
        _parallel = parallel;
        Config = config;
        RunDirectory = directory;
        Model = model;
        Optimizer = optimizer;
        Generator = generator;
        IsResumed = state is not null;
        try
        {
            _directoryLock = parallel.IsRoot ? directory.TakeForTraining() : null;
            if (config.Model.VocabSize < Gpt2Tokenizer.VocabSize)
                throw new ArgumentException($"The model's vocabulary ({config.Model.VocabSize} ids) is smaller than the GPT-2 tokenizer's ({Gpt2Tokenizer.VocabSize}): it cannot train on its tokens.");
            long dataStart = Stopwatch.GetTimestamp();
            _data = TrainingData.Load(config.Data, config.TrainRatio, Gpt2Tokenizer.Instance, config.ValidationData, config.Read);
            Loaders = DataLoaders.CreateTrainValidation(_data.Train, _data.Validation, config.BatchSize, config.Model.ContextLength, config.Stride, generator);
            // Rank 0 alone scores the benchmark (it reads the model and draws nothing, so the other ranks need not wait for it in step).
            if (config.Training.EvalTask is string spec && parallel.IsRoot) _evalTask = BenchmarkTask.Load(spec);
            _setupDataTime = Stopwatch.GetElapsedTime(dataStart);
            if (state is not null) CheckSameData(state, _data, Loaders.Train);
            StartRanks(parallel, config, _data, model, state);
        }
        catch
        {
            _data?.Dispose();
            _directoryLock?.Dispose();
            optimizer.Dispose();
            model.Dispose();
            throw;
        }
        Trainer = new Trainer(model, optimizer, Loaders, config.Training, Gpt2Tokenizer.Instance, state, parallel);
        State.WorldSize = parallel.WorldSize; // what this run's checkpoints record
        _tokensPerEpoch = (long)Loaders.Train.Count * config.BatchSize * config.Model.ContextLength;
        _bestValLoss = Trainer.State.Evaluations.Select(e => e.ValLoss).Where(double.IsFinite).DefaultIfEmpty(double.PositiveInfinity).Min();
        if (IsRoot) _bestWriter = new BestModelWriter(RunDirectory.File(BestModelFile), model);
        Trainer.Evaluated += OnEvaluated;
        Trainer.Sampled += s => Print(s.Text);
        Trainer.StepCompleted += OnStepCompleted;
    }

    /// <summary>
    /// [distributed] Every rank on the same settings and data (checked), the same starting weights (rank 0's, broadcast,
    /// then a checksum compared), and its own dropout stream. Nothing happens in one process.
    /// </summary>
    private static void StartRanks(DataParallel parallel, RunConfig config, TrainingData data, GptModel model, TrainerState? state)
    {
        // Settings first: ranks that disagree on the model's shape must not meet in a broadcast of different lengths.
        parallel.VerifySameSettings($"{config.ToJson()}\n{data.Description}\n{state?.GlobalStep} {state?.NextBatch} {state?.TokensSeen} {state?.SamplerSeed}");
        if (state is null) parallel.BroadcastParameters(model);
        else parallel.VerifyIdentical(model, "after loading the checkpoint");
        parallel.UseRankDropoutStream(model, config.Seed);
    }

    /// <summary>
    /// A resume continues the saved data order only over the same data: the files and token counts must be the checkpoint's,
    /// and the saved position (shard, offset) must be where the saved pass puts the next window. Checkpoints from before
    /// positions were recorded carry neither and are taken as they are.
    /// </summary>
    private static void CheckSameData(TrainerState state, TrainingData data, DataLoader train)
    {
        if (state.DataFingerprint is string saved && saved != data.Fingerprint)
            throw new InvalidDataException($"TrainingRun.Resume: the data is not what the run trained on, so its data order cannot continue (checkpoint: {saved}; now: {data.Fingerprint}). Give the run the same RunConfig.Data and RunConfig.ValidationData.");
        var now = DataPositionOf(state, data, train);
        if (state.DataPosition is DataPosition position && position != now)
            throw new InvalidDataException($"TrainingRun.Resume: the checkpoint's next window is at {position}, but the data now puts it at {now?.ToString() ?? "the end of the pass"}: the data changed. Give the run the same RunConfig.Data and RunConfig.ValidationData.");
    }

    /// <summary>Where the next training window of the pass in <paramref name="state"/> starts (null between epochs).</summary>
    private static DataPosition? DataPositionOf(TrainerState state, TrainingData data, DataLoader train)
    {
        if (!state.EpochStarted) return null;
        return train.ResumeEpoch(state.SamplerSeed, state.NextBatch).NextWindow is int window ? data.Locate((long)window * train.Dataset.Stride) : null;
    }

    public RunConfig Config { get; }

    /// <summary>The run directory (on a rank other than 0 its path only: that rank writes nothing there).</summary>
    public RunDirectory RunDirectory { get; }
    public GptModel Model { get; }
    public AdamW Optimizer { get; }

    /// <summary>The run's one random generator: model initialization, data order and dropout, as <c>torch.manual_seed</c> in the book.</summary>
    public IRandomGenerator Generator { get; }

    public TrainValidationLoaders Loaders { get; }

    /// <summary>What the data is: its files (or the bundled text) and sizes, for a run's banner.</summary>
    public string DataDescription => _data.Description;

    /// <summary>
    /// True when the run stopped before its last epoch (cancelled, or at <see cref="TrainingOptions.MaxSteps"/>) and its last
    /// checkpoint continues it with <see cref="Resume"/>.
    /// </summary>
    public bool CanContinue(TrainingOutcome outcome) =>
        outcome == TrainingOutcome.Stopped || outcome == TrainingOutcome.MaxStepsReached && State.Epoch < Config.Training.Epochs;

    /// <summary>The training loop (its events report steps, evaluations and samples).</summary>
    public Trainer Trainer { get; }

    public TrainerState State => Trainer.State;

    /// <summary>True when the run continues from a checkpoint.</summary>
    public bool IsResumed { get; }

    /// <summary>The processes the run is split over: <see cref="DataParallel.SingleProcess"/>, or the ranks of an Open MPI job.</summary>
    public DataParallel Parallel => _parallel;

    /// <summary>
    /// True in the process that prints (<see cref="Output"/>) and writes the run directory, the checkpoints, the model and
    /// the reports: the only one, or rank 0 of a data-parallel run. The other ranks train, evaluate their share and write nothing.
    /// </summary>
    public bool IsRoot => _parallel.IsRoot;

    /// <summary>Where the time of this session went.</summary>
    internal RunTimings Timings => Trainer.Timings;

    /// <summary>The newest checkpoint this session wrote (null before the first).</summary>
    public string? LastCheckpoint { get; private set; }

    /// <summary>Every line the run prints: the set-up, the book's losses and samples, checkpoint notes and the summary.</summary>
    public event Action<string>? Output;

    /// <summary>
    /// A new run: the generator seeded with <see cref="RunConfig.Seed"/>, a freshly initialized model (or the weights of
    /// <see cref="RunConfig.InitFrom"/>), AdamW with the run's learning rate and weight decay (or the optimizer state the
    /// weights' file holds: the book's <c>model_and_optimizer.pth</c>, a training checkpoint), the data loaded and split.
    /// Nothing is trained until <see cref="Train"/>.
    /// </summary>
    /// <param name="parallel">The ranks of an Open MPI job to split the run over (<c>DistributedTraining.Start</c>); default one process.
    /// The caller keeps it and disposes it after the run.</param>
    public static TrainingRun Start(RunConfig config, TrainingRunOptions? options = null, DataParallel? parallel = null)
    {
        parallel ??= DataParallel.SingleProcess;
        options = (options ?? new TrainingRunOptions()).Validate();
        config = config with { Training = config.Training.Validate() };
        config.Model.Validate();
        var generator = RandomGenerators.Create(config.Rng, config.Seed);
        GptModel model;
        AdamW optimizer;
        var lines = new List<string>();
        if (config.InitFrom is string spec)
        {
            (model, optimizer) = LoadInitialWeights(spec, config, lines);
            model.DropoutGenerator = generator;
            // A restored optimizer keeps its own hyper-parameters: the configuration says what the run really uses.
            config = config with { LearningRate = optimizer.LearningRate, WeightDecay = optimizer.WeightDecay };
        }
        else
        {
            MemoryBudget.Require(MemoryBudget.TrainingBytes(config.Model, config.BatchSize),
                $"training with RunConfig.BatchSize {config.BatchSize}, GptConfig.ContextLength {config.Model.ContextLength}, GptConfig.EmbeddingDim {config.Model.EmbeddingDim} and GptConfig.Layers {config.Model.Layers}");
            model = new GptModel(config.Model, generator);
            optimizer = new AdamW(model.Parameters(), (float)config.LearningRate, (float)config.WeightDecay);
        }
        TrainingRun run;
        try
        {
            var directory = OpenDirectory(options.Directory ?? RunDirectory.DefaultPath(DateTime.UtcNow), parallel);
            run = new TrainingRun(config, options, parallel, directory, model, optimizer, generator, null);
        }
        catch
        {
            optimizer.Dispose();
            model.Dispose();
            throw;
        }
        run._pendingLines.AddRange(lines);
        return run;
    }

    /// <summary>
    /// The weights (and optimizer state, when the file has one) of <paramref name="spec"/> as a model of <paramref name="wanted"/>:
    /// the same shape, a context no longer than the weights' (the positional table and its AdamW moments keep their first rows).
    /// </summary>
    private static (GptModel Model, AdamW Optimizer) LoadInitialWeights(string spec, RunConfig config, List<string> lines)
    {
        var wanted = config.Model;
        using var loaded = ModelStore.Open(spec);
        var stored = loaded.Model.Config;
        if (wanted with { ContextLength = stored.ContextLength, DropRate = stored.DropRate } != stored || wanted.ContextLength > stored.ContextLength)
            throw new ArgumentException($"RunConfig.InitFrom {spec}: the weights are {stored.ToJson()}; the run's model must match them, with a context length of at most {stored.ContextLength}.");
        lines.Add(string.Create(CultureInfo.InvariantCulture,
            $"Initialized from {spec} ({loaded.Format}{(loaded.Optimizer is null ? "" : ", with its AdamW state")}){(wanted.ContextLength < stored.ContextLength ? $"; positional table cut from {stored.ContextLength} to {wanted.ContextLength}" : "")}."));
        var model = StateDictLoader.NewModel(wanted, m => CopyRows(loaded.Model.Parameters().Select(p => p.Value).ToList(), m.Parameters().Select(p => p.Value).ToList()));
        AdamW? optimizer = null;
        try
        {
            if (loaded.Optimizer is AdamW source)
            {
                optimizer = new AdamW(model.Parameters(), source.LearningRate, source.WeightDecay, source.Beta1, source.Beta2, source.Eps) { StepCount = source.StepCount };
                CopyRows(source.ExpAvg, optimizer.ExpAvg);
                CopyRows(source.ExpAvgSq, optimizer.ExpAvgSq);
            }
            else optimizer = new AdamW(model.Parameters(), (float)config.LearningRate, (float)config.WeightDecay);
            return (model, optimizer);
        }
        catch
        {
            optimizer?.Dispose();
            model.Dispose();
            throw;
        }
    }

    /// <summary>Copies each tensor into its counterpart, keeping the leading rows when the destination is shorter (the positional table).</summary>
    private static void CopyRows(IReadOnlyList<Tensor> from, IReadOnlyList<Tensor> to)
    {
        for (int i = 0; i < to.Count; i++) from[i].Span[..to[i].Span.Length].CopyTo(to[i].Span);
    }

    /// <summary>
    /// Continues a run from a run directory (its newest complete checkpoint) or a checkpoint file, bit for bit as if it had
    /// never stopped. Only <see cref="TrainingRunOptions.Epochs"/> and <see cref="TrainingRunOptions.MaxSteps"/> may change.
    /// A checkpoint of N ranks continues on <paramref name="parallel"/>'s M with the same global batch (<c>--grad-accum</c> × N / M).
    /// </summary>
    public static TrainingRun Resume(string runDirectoryOrCheckpoint, TrainingRunOptions? options = null, DataParallel? parallel = null)
    {
        options = (options ?? new TrainingRunOptions()).Validate();
        parallel ??= DataParallel.SingleProcess;
        // Temporary files of a write the previous process did not finish are removed before looking for the latest checkpoint.
        if (parallel.IsRoot && System.IO.Directory.Exists(runDirectoryOrCheckpoint)) AtomicFile.RemoveLeftovers(runDirectoryOrCheckpoint);
        var checkpoint = TrainingCheckpoint.Load(runDirectoryOrCheckpoint);
        var lines = new List<string>();
        var state = checkpoint.State;
        var training = checkpoint.Config.Training;
        if (options.Epochs is int epochs) training = training with { Epochs = epochs };
        if (options.MaxSteps is long maxSteps) training = training with { MaxSteps = maxSteps };
        else if (training.MaxSteps is long reached && state.GlobalStep + 1 >= reached)
        {
            // The run stopped at its --max-steps: resuming without a new limit means "go on to the last epoch".
            lines.Add($"The run stopped at TrainingOptions.MaxSteps {reached}; continuing to the end of epoch {training.Epochs}.");
            training = training with { MaxSteps = null };
        }
        TrainingRun run;
        try
        {
            // [distributed] Keep the checkpoint's global batch on this world size (N ranks <-> --grad-accum N).
            var kept = parallel.KeepGlobalBatch(training, state.WorldSize);
            if (kept.GradAccum != training.GradAccum)
                lines.Add($"The run was saved by {state.WorldSize} process(es) with TrainingOptions.GradAccum {training.GradAccum}; continuing on {parallel.WorldSize} with TrainingOptions.GradAccum {kept.GradAccum} (same global batch).");
            var config = checkpoint.Config with { Training = kept.Validate() };
            var directory = OpenDirectory(options.Directory ?? Path.GetDirectoryName(Path.GetFullPath(checkpoint.Path))!, parallel);
            run = new TrainingRun(config, options, parallel, directory, checkpoint.Model, checkpoint.Optimizer, checkpoint.Generator, state);
        }
        catch
        {
            checkpoint.Dispose();
            throw;
        }
        lines.Add($"Resuming {checkpoint.Path} at epoch {state.Epoch + 1}, step {state.GlobalStep + 1} ({state.TokensSeen:N0} tokens seen{(state.DataPosition is DataPosition p ? $"; next window at {p}" : "")}).");
        run._pendingLines.InsertRange(0, lines);
        return run;
    }

    private static RunDirectory OpenDirectory(string path, DataParallel parallel)
    {
        // Rank 0 alone writes there: the other ranks (perhaps on other machines) keep the path and create nothing.
        if (!parallel.IsRoot) return new RunDirectory(path, create: false);
        var directory = new RunDirectory(path);
        AtomicFile.RemoveLeftovers(directory.Path);
        return directory;
    }

    /// <summary>
    /// Trains until every epoch is done, <see cref="TrainingOptions.MaxSteps"/> is reached or <paramref name="cancellationToken"/>
    /// is cancelled (at the next step boundary), then writes the model, a last checkpoint, the reports and the timings.
    /// A diverged loss writes a checkpoint of the last good step before the <see cref="TrainingDivergedException"/> goes up.
    /// </summary>
    public TrainingOutcome Train(CancellationToken cancellationToken = default)
    {
        var clock = Stopwatch.StartNew();
        long tokensAtStart = State.TokensSeen;
        Timings.DataLoading += _setupDataTime;
        _lastCheckpointTimestamp = Stopwatch.GetTimestamp();
        _lastGood = LastGoodStep.Of(State, Generator);
        if (IsRoot) Timed(t => Timings.Reports += t, () => RunDirectory.WriteConfig(Config));

        foreach (var line in _pendingLines) Print(line);
        _pendingLines.Clear();
        // The initial losses are printed only; they leave the generator as it was, so rank 0 alone computes them.
        if (!IsResumed && State.GlobalStep < 0 && IsRoot) Timed(t => Timings.InitialLosses += t, PrintInitialLosses);

        Trainer.ShouldStop = () => cancellationToken.IsCancellationRequested;
        TrainingOutcome outcome;
        try
        {
            outcome = Trainer.Run();
        }
        catch (TrainingDivergedException)
        {
            // The diverged step changed neither weights nor moments; put the state and generator back to the last good step.
            _lastGood.Restore(State, Generator);
            string note = TryCheckpoint();
            TryWriteProgress("stopped: the loss diverged");
            Print($"The loss diverged; {note}.");
            throw;
        }
        catch (ReportWriteException e)
        {
            string note = TryCheckpoint();
            throw new IOException($"{e.Message}; {note}. Free the disk or fix the permissions, then resume the run from {RunDirectory.Path}.", e.InnerException);
        }

        string status = outcome switch
        {
            TrainingOutcome.Completed => "completed",
            TrainingOutcome.MaxStepsReached => $"stopped at TrainingOptions.MaxSteps {Config.Training.MaxSteps}",
            _ => "stopped by Ctrl+C (or SIGTERM)",
        };
        _parallel.VerifyIdentical(Model, "at the end of training"); // [distributed] the ranks still agree bit for bit
        // model.safetensors (the weights alone, a third of the checkpoint) is written beside the checkpoint, not after it:
        // the disk takes two files at once faster than one after the other (measured on this project's VMs: 2.5 GB in
        // 3.5-3.9 s side by side, 4.2-12.8 s in turn), and nothing else is left to do on the run's path at this point.
        var modelWrite = IsRoot
            ? Task.Factory.StartNew(() => Model.Save(RunDirectory.File(RunDirectory.ModelFile)), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default)
            : Task.CompletedTask;
        try
        {
            SaveCheckpoint();
        }
        catch
        {
            try { modelWrite.Wait(); } catch (AggregateException) { } // the checkpoint's error is the one to report
            throw;
        }
        Timed(t => Timings.Checkpoints += t, () => modelWrite.GetAwaiter().GetResult());
        WriteProgress(status);

        double seconds = clock.Elapsed.TotalSeconds;
        long tokens = State.TokensSeen - tokensAtStart;
        Timings.Tokens = tokens;
        // The session began with Start/Resume loading the data (counted in DataLoading).
        Timings.Total = clock.Elapsed + _setupDataTime;
        if (IsRoot) Timed(t => Timings.Reports += t, () => WriteText(RunDirectory.File(TimingsFile), Timings.ToJson()));
        Timings.Total = clock.Elapsed + _setupDataTime;

        Print(string.Create(CultureInfo.InvariantCulture,
            $"Training {status} in {seconds / 60:F2} minutes ({seconds:F1} s, {tokens / Math.Max(seconds, 1e-9):F0} tokens/s)."));
        Print(Timings.Describe());
        Print($"Run directory: {RunDirectory.Path} (model.safetensors, {BestModelFile}, checkpoint-<steps>.safetensors, metrics.csv, loss.svg, report.html, {TimingsFile})");
        return outcome;
    }

    /// <summary>
    /// Writes a checkpoint of the run as it is now (and <c>best.safetensors</c> when a better model is waiting), then deletes
    /// the checkpoints beyond <see cref="TrainingRunOptions.KeepLast"/>. Call it between steps. Only rank 0 of a
    /// data-parallel run writes, but every rank must call it at the same point: each rank keeps its own share of the AdamW
    /// moments current (<see cref="DataParallel.OptimizerStep"/>), and they are gathered first for the whole state.
    /// </summary>
    public void SaveCheckpoint()
    {
        long start = Stopwatch.GetTimestamp();
        _parallel.GatherOptimizerState(Optimizer); // [distributed]
        if (!IsRoot) return;
        // best.safetensors first: a checkpoint's evaluations name the best loss, and a resumed run trusts the file to hold it.
        IOException? bestFailure = null;
        try
        {
            _bestWriter!.Flush();
        }
        catch (IOException e)
        {
            bestFailure = e;
        }
        string path = RunDirectory.File(TrainingCheckpoint.FileNameFor(State.GlobalStep + 1));
        State.DataPosition = DataPositionOf(State, _data, Loaders.Train);
        State.DataFingerprint = _data.Fingerprint;
        TrainingCheckpoint.Save(path, Config, Model, Optimizer, Generator, State);
        LastCheckpoint = path;
        // Older checkpoints go only once the new one is durable, so a crash at any moment leaves a complete one.
        foreach (var old in TrainingCheckpointFile.List(RunDirectory.Path).Skip(_options.KeepLast))
            if (!string.Equals(Path.GetFullPath(old), Path.GetFullPath(path), StringComparison.Ordinal))
                AtomicFile.Delete(old);
        _lastCheckpointTimestamp = Stopwatch.GetTimestamp();
        Timings.Checkpoints += Stopwatch.GetElapsedTime(start);
        if (bestFailure is not null) throw bestFailure;
    }

    private void OnStepCompleted(StepProgress progress)
    {
        _lastGood = LastGoodStep.Of(State, Generator);
        long done = progress.Step + 1;
        bool byStep = _options.SaveEverySteps is long every && done % every == 0;
        bool byTime = _options.SaveEveryMinutes > 0 && Stopwatch.GetElapsedTime(_lastCheckpointTimestamp).TotalMinutes >= _options.SaveEveryMinutes;
        // [distributed] Every rank gathers the moments for a checkpoint, so rank 0's clock decides for all.
        if (_options.SaveEveryMinutes > 0 && _parallel.IsDistributed) byTime = _parallel.Any(IsRoot && byTime);
        if (byStep || byTime) SaveCheckpoint();
    }

    private void OnEvaluated(EvaluationRecord record)
    {
        Print(record.BookLine);
        if (_evalTask is not null && record.Step % (Config.Training.EvalTaskEvery ?? Config.Training.EvalFreq) == 0)
        {
            long start = Stopwatch.GetTimestamp();
            var result = _evalTask.Evaluate(Model);
            var elapsed = Stopwatch.GetElapsedTime(start);
            Timings.Evaluations += elapsed;
            var scores = new TaskEvaluationRecord(record.Step, result.Task, result.Count, result.Metrics, elapsed.TotalSeconds);
            State.TaskEvaluations.Add(scores);
            Print(scores.Describe());
        }
        if (IsRoot && double.IsFinite(record.ValLoss) && record.ValLoss < _bestValLoss)
        {
            // A copy in memory; the file is written in the background while training goes on (BestModelWriter).
            _bestValLoss = record.ValLoss;
            Timed(t => Timings.Checkpoints += t, _bestWriter!.Offer);
        }
        WriteProgress(null);
    }

    private void WriteProgress(string? status)
    {
        if (!IsRoot) return;
        long start = Stopwatch.GetTimestamp();
        try
        {
            RunDirectory.WriteProgress(Config, State, _tokensPerEpoch, status);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ReportWriteException($"writing the metrics and plots in {RunDirectory.Path} failed ({e.Message})", e);
        }
        finally
        {
            Timings.Reports += Stopwatch.GetElapsedTime(start);
        }
    }

    private void TryWriteProgress(string status)
    {
        try
        {
            WriteProgress(status);
        }
        catch (ReportWriteException) { }
    }

    /// <summary>A last checkpoint before the run stops on an error; says what happened in words.</summary>
    private string TryCheckpoint()
    {
        // [distributed] The error may be this rank's alone, so the others cannot be asked for their share of the moments.
        if (_parallel.IsDistributed)
            return $"the optimizer state is spread over the ranks, so no checkpoint is written after an error on one of them; the newest one on disk is {(IsRoot ? TrainingCheckpoint.Latest(RunDirectory.Path) : null) ?? "none"}";
        try
        {
            SaveCheckpoint();
            return $"a checkpoint of step {State.GlobalStep + 1} was written to {LastCheckpoint}";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"the last checkpoint could not be written either ({e.Message}); the newest one on disk is {TrainingCheckpoint.Latest(RunDirectory.Path) ?? "none"}";
        }
    }

    /// <summary>
    /// The book's losses before training (section 5.1.3): <c>torch.manual_seed(123)</c>, then <c>calc_loss_loader</c> on both
    /// loaders. The book does this with a separately built model and re-seeds before training; building the same model
    /// again is what restoring the generator state after initialization amounts to.
    /// </summary>
    private void PrintInitialLosses()
    {
        byte[] afterInit = Generator.GetState();
        Generator.ManualSeed(Config.Seed);
        // The book evaluates every batch; a large corpus gets the eval_iter batches of an evaluation instead.
        int? batches = Loaders.Train.Count <= 100 ? null : Config.Training.EvalIter;
        Model.Eval();
        double trainLoss = Pretraining.CalcLossLoader(Loaders.Train, Model, batches);
        double valLoss = Pretraining.CalcLossLoader(Loaders.Validation, Model, batches);
        Model.Train();
        Generator.SetState(afterInit);
        Print(string.Create(CultureInfo.InvariantCulture, $"Training loss: {trainLoss}"));
        Print(string.Create(CultureInfo.InvariantCulture, $"Validation loss: {valLoss}"));
    }

    private void Print(string line)
    {
        if (IsRoot) Output?.Invoke(line);
    }

    private static void Timed(Action<TimeSpan> add, Action action)
    {
        long start = Stopwatch.GetTimestamp();
        try
        {
            action();
        }
        finally
        {
            add(Stopwatch.GetElapsedTime(start));
        }
    }

    private static void WriteText(string path, string text) =>
        AtomicFile.Write(path, stream => stream.Write(new System.Text.UTF8Encoding(false).GetBytes(text)));

    public void Dispose()
    {
        _bestWriter?.Dispose();
        _data.Dispose();
        Optimizer.Dispose();
        Model.Dispose();
        _directoryLock?.Dispose(); // last: the directory is this run's until every write above is done
    }

    /// <summary>A metrics or plot write failed (disk full, permissions): the run stops after a last checkpoint attempt.</summary>
    private sealed class ReportWriteException(string message, Exception inner) : IOException(message, inner);

    /// <summary>
    /// The trainer state's position and the generator's state after the last completed step: a diverged step has already
    /// drawn dropout masks and counted tokens (and, at an epoch's start, started a pass) before its loss turned out non-finite.
    /// </summary>
    private readonly record struct LastGoodStep(int Epoch, bool EpochStarted, long? SamplerSeed, int NextBatch, long GlobalStep,
        long TokensSeen, double ElapsedSeconds, int Evaluations, int Samples, int TaskEvaluations, byte[] Generator)
    {
        public static LastGoodStep Of(TrainerState s, IRandomGenerator generator) =>
            new(s.Epoch, s.EpochStarted, s.SamplerSeed, s.NextBatch, s.GlobalStep, s.TokensSeen, s.ElapsedSeconds, s.Evaluations.Count, s.Samples.Count, s.TaskEvaluations.Count, generator.GetState());

        public void Restore(TrainerState s, IRandomGenerator generator)
        {
            (s.Epoch, s.EpochStarted, s.SamplerSeed, s.NextBatch, s.GlobalStep, s.TokensSeen, s.ElapsedSeconds) =
                (Epoch, EpochStarted, SamplerSeed, NextBatch, GlobalStep, TokensSeen, ElapsedSeconds);
            s.Evaluations.RemoveRange(Evaluations, s.Evaluations.Count - Evaluations);
            s.Samples.RemoveRange(Samples, s.Samples.Count - Samples);
            s.TaskEvaluations.RemoveRange(TaskEvaluations, s.TaskEvaluations.Count - TaskEvaluations);
            generator.SetState(Generator);
        }
    }
}
