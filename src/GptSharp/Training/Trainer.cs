using System.Diagnostics;
using System.Globalization;
using GptSharp.Data;
using GptSharp.Evaluation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tokenization;

namespace GptSharp.Training;

/// <summary>How a run trains. The defaults are the book's chapter-5 run; the Appendix D options are all off.</summary>
public sealed record TrainingOptions
{
    public int Epochs { get; init; } = 10;

    /// <summary>Evaluate every this many optimizer steps (<c>eval_freq</c>).</summary>
    public int EvalFreq { get; init; } = 5;

    /// <summary>Batches per loader in each evaluation (<c>eval_iter</c>).</summary>
    public int EvalIter { get; init; } = 5;

    /// <summary>Prompt of the greedy sample printed after every epoch (<c>start_context</c>).</summary>
    public string StartContext { get; init; } = "Every effort moves you";

    /// <summary>Tokens the epoch sample generates.</summary>
    public int SampleTokens { get; init; } = 50;

    /// <summary>Stop after this many optimizer steps in total (null: run every epoch).</summary>
    public long? MaxSteps { get; init; }

    /// <summary>Linear warmup steps (Appendix D); 0 = off.</summary>
    public int WarmupSteps { get; init; }

    /// <summary>Learning rate at the first warmup step (Appendix D's <c>initial_lr</c>).</summary>
    public double WarmupInitialLr { get; init; } = 3e-5;

    /// <summary>Cosine-decay floor (Appendix D's <c>min_lr</c>); null = no decay.</summary>
    public double? MinLr { get; init; }

    /// <summary>Clip the global gradient norm to this value (Appendix D uses 1.0); 0 = off. Like Appendix D's
    /// <c>train_model</c>, clipping starts once the warmup is over (<c>global_step &gt;= warmup_steps</c>): the tiny
    /// warmup learning rates already keep the first updates small.</summary>
    public double GradClip { get; init; }

    /// <summary>Micro-batches whose gradients are averaged into one optimizer step; 1 = off.</summary>
    public int GradAccum { get; init; } = 1;

    /// <summary>
    /// A benchmark scored during training, as <c>NAME:FILE</c> (<c>hellaswag:hellaswag_val.jsonl</c>, <c>lambada:FILE</c>;
    /// see <see cref="Evaluation.BenchmarkTask"/>); null = none. Its metrics go into <c>metrics.csv</c>, the report and the dashboard.
    /// </summary>
    public string? EvalTask { get; init; }

    /// <summary>Score <see cref="EvalTask"/> at the evaluations whose step is a multiple of this (a multiple of
    /// <see cref="EvalFreq"/>; null: at every evaluation).</summary>
    public int? EvalTaskEvery { get; init; }

    public TrainingOptions Validate()
    {
        if (Epochs <= 0) throw new ArgumentException($"TrainingOptions.Epochs must be positive, got {Epochs}.");
        if (EvalFreq <= 0) throw new ArgumentException($"TrainingOptions.EvalFreq must be positive, got {EvalFreq}.");
        if (EvalIter <= 0) throw new ArgumentException($"TrainingOptions.EvalIter must be positive, got {EvalIter}.");
        if (SampleTokens < 0) throw new ArgumentException($"The sample length must be non-negative, got {SampleTokens}.");
        if (MaxSteps is <= 0) throw new ArgumentException($"TrainingOptions.MaxSteps must be positive, got {MaxSteps}.");
        if (WarmupSteps < 0) throw new ArgumentException($"TrainingOptions.WarmupSteps must be non-negative, got {WarmupSteps}.");
        if (MinLr is double m && !(m >= 0)) throw new ArgumentException($"TrainingOptions.MinLr must be non-negative, got {m}.");
        if (!(GradClip >= 0)) throw new ArgumentException($"TrainingOptions.GradClip must be non-negative (0 = off), got {GradClip}.");
        if (GradAccum <= 0) throw new ArgumentException($"TrainingOptions.GradAccum must be positive, got {GradAccum}.");
        if (string.IsNullOrEmpty(StartContext)) throw new ArgumentException("TrainingOptions.StartContext must not be empty.");
        if (EvalTaskEvery is int every)
        {
            if (EvalTask is null) throw new ArgumentException("TrainingOptions.EvalTaskEvery needs TrainingOptions.EvalTask NAME:FILE.");
            // The task's scores share metrics.csv's rows with the loss evaluations, so they happen at some of them.
            if (every <= 0 || every % EvalFreq != 0)
                throw new ArgumentException($"TrainingOptions.EvalTaskEvery must be a positive multiple of TrainingOptions.EvalFreq ({EvalFreq}), got {every}.");
        }
        if (EvalTask is not null && string.IsNullOrWhiteSpace(EvalTask)) throw new ArgumentException("TrainingOptions.EvalTask must not be empty: give NAME:FILE.");
        return this;
    }
}

/// <summary>One evaluation: the book's <c>train_losses</c>, <c>val_losses</c> and <c>track_tokens_seen</c> entries, plus run metrics.</summary>
public sealed record EvaluationRecord(long Step, int Epoch, long TokensSeen, double TrainLoss, double ValLoss, double LearningRate, double TokensPerSecond)
{
    /// <summary>The book's line, e.g. <c>Ep 1 (Step 000000): Train loss 9.781, Val loss 9.933</c> (Epoch is 1-based).</summary>
    public string BookLine => string.Create(CultureInfo.InvariantCulture,
        $"Ep {Epoch} (Step {Step:D6}): Train loss {TrainLoss:F3}, Val loss {ValLoss:F3}");
}

/// <summary>A benchmark's metrics (lm-evaluation-harness names) at the evaluation of <paramref name="Step"/>, and how long scoring took.</summary>
public sealed record TaskEvaluationRecord(long Step, string Task, int Examples, IReadOnlyList<BenchmarkMetric> Metrics, double Seconds)
{
    /// <summary>One line, e.g. <c>hellaswag (Step 000100): acc 0.2500, acc_norm 0.2700 (1000 examples, 12.3 s)</c>.</summary>
    public string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"{Task} (Step {Step:D6}): {string.Join(", ", Metrics.Select(m => $"{m.Name} {m.Value:0.0000}"))} ({Examples} examples, {Seconds:F1} s)");
}

/// <summary>The greedy sample after an epoch (Epoch is 1-based).</summary>
public sealed record SampleRecord(int Epoch, long Step, string Text);

/// <summary>Progress after one optimizer step.</summary>
public readonly record struct StepProgress(int Epoch, long Step, long TotalSteps, float Loss, double LearningRate, long TokensSeen, double TokensPerSecond, TimeSpan Elapsed);

/// <summary>
/// Everything a run needs to continue bit-identically, except the model, the optimizer and the global
/// random generator (saved next to it in the training checkpoint). Serialized as JSON.
/// </summary>
public sealed class TrainerState
{
    /// <summary>0-based epoch in progress (equal to the epoch count when training is finished).</summary>
    public int Epoch { get; set; }

    /// <summary>True once the current epoch's pass has started (its loader draws are done).</summary>
    public bool EpochStarted { get; set; }

    /// <summary>The current pass's shuffle seed (recreates its order on resume).</summary>
    public long? SamplerSeed { get; set; }

    /// <summary>The next batch of the current pass (the data-order position).</summary>
    public int NextBatch { get; set; }

    /// <summary>Index of the last optimizer step taken; -1 before the first (the book's <c>global_step</c>).</summary>
    public long GlobalStep { get; set; } = -1;

    /// <summary>Tokens trained on so far (the book's <c>tokens_seen</c>, summing <c>input_batch.numel()</c>).</summary>
    public long TokensSeen { get; set; }

    /// <summary>The optimizer's learning rate when the run started: the peak of the schedule (the optimizer's own rate moves with it).</summary>
    public double PeakLearningRate { get; set; }

    /// <summary>[distributed] Processes the run was split over when saved (MPI's world size; 1 for one process). Resuming
    /// on another world size keeps the global batch: <c>--grad-accum</c> × this / the new world size.</summary>
    public int WorldSize { get; set; } = 1;

    /// <summary>
    /// Where the next training window starts, as a file and a token offset in it (an llm.c shard, a token file, or the text):
    /// written with each checkpoint, and checked on a resume against where the data of the run puts the saved data-order
    /// position, so that changed data is an error instead of a silently different run. Null at an epoch boundary.
    /// </summary>
    public DataPosition? DataPosition { get; set; }

    /// <summary>The files the run trains and validates on with their token counts (<see cref="TrainingData.Fingerprint"/>), checked on a resume.</summary>
    public string? DataFingerprint { get; set; }

    /// <summary>Training time so far over all sessions of the run.</summary>
    public double ElapsedSeconds { get; set; }

    public List<EvaluationRecord> Evaluations { get; set; } = [];

    public List<SampleRecord> Samples { get; set; } = [];

    /// <summary>The scores of <see cref="TrainingOptions.EvalTask"/>, one per evaluation that ran it.</summary>
    public List<TaskEvaluationRecord> TaskEvaluations { get; set; } = [];

    public IEnumerable<double> TrainLosses => Evaluations.Select(e => e.TrainLoss);
    public IEnumerable<double> ValLosses => Evaluations.Select(e => e.ValLoss);
    public IEnumerable<long> TrackTokensSeen => Evaluations.Select(e => e.TokensSeen);
}

/// <summary>A place in the training data: a file (its name) and the index of a token in it.</summary>
public sealed record DataPosition(string File, long Offset)
{
    public override string ToString() => $"{File} token {Offset:N0}";
}

/// <summary>Why <see cref="Trainer.Run"/> returned.</summary>
public enum TrainingOutcome { Completed, MaxStepsReached, Stopped }

/// <summary>A non-finite loss: the run cannot continue.</summary>
public sealed class TrainingDivergedException(string message) : InvalidOperationException(message);

/// <summary>
/// The book's <c>train_model_simple</c> loop as a resumable object, with Appendix D's options (warmup, cosine
/// decay, gradient clipping) and gradient accumulation. Random draws happen in the book's order: each pass of the
/// training loader, each evaluation's passes, and dropout in every training forward, all from the model's
/// <see cref="GptModel.DropoutGenerator"/>, which must be the generator the loaders were given (a data-parallel run gives
/// each rank its own dropout stream instead, <see cref="DataParallel.UseRankDropoutStream"/>, so that the loaders' shared
/// generator stays identical on every rank).
/// </summary>
public sealed class Trainer
{
    /// <summary>
    /// Fault injection for the multi-process tests: <c>GPTSHARP_FAULT_NAN_LOSS_AT_STEP=N</c> in one process's environment
    /// makes its loss NaN at step N, so a divergence can be placed on one chosen rank under <c>mpirun</c>.
    /// </summary>
    private static readonly long? FaultNanLossAtStep =
        long.TryParse(Environment.GetEnvironmentVariable("GPTSHARP_FAULT_NAN_LOSS_AT_STEP"), CultureInfo.InvariantCulture, out long faultStep) ? faultStep : null;

    private readonly GptModel _model;
    private readonly AdamW _optimizer;
    private readonly TrainValidationLoaders _loaders;
    private readonly Gpt2Tokenizer _tokenizer;
    private readonly DataParallel _parallel; // [distributed] the identity for one process

    /// <param name="parallel">[distributed] The ranks this run is split over (default: one process). Each step then
    /// trains on <c>GradAccum × WorldSize</c> batches, this rank's block of <c>GradAccum</c> of them.</param>
    public Trainer(GptModel model, AdamW optimizer, TrainValidationLoaders loaders, TrainingOptions options,
        Gpt2Tokenizer tokenizer, TrainerState? state = null, DataParallel? parallel = null)
    {
        _parallel = parallel ?? DataParallel.SingleProcess;
        _model = model;
        _optimizer = optimizer;
        _loaders = loaders;
        Options = options.Validate();
        _tokenizer = tokenizer;
        State = state ?? new TrainerState { PeakLearningRate = optimizer.LearningRate };
        long stepsPerEpoch = StepsPerEpoch(loaders.Train.Count, options.GradAccum * _parallel.WorldSize);
        long totalSteps = stepsPerEpoch * options.Epochs;
        TotalSteps = options.MaxSteps is long max ? Math.Min(max, totalSteps) : totalSteps;
        Schedule = new LearningRateSchedule(State.PeakLearningRate, options.WarmupSteps, options.WarmupInitialLr, options.MinLr, TotalSteps);
    }

    public TrainingOptions Options { get; }
    public TrainerState State { get; }
    public LearningRateSchedule Schedule { get; }

    /// <summary>Time spent in steps, evaluations, samples and batch fetches (<see cref="RunTimings"/>; the run adds the rest).</summary>
    internal RunTimings Timings { get; } = new();

    /// <summary>Optimizer steps the whole run takes.</summary>
    public long TotalSteps { get; }

    /// <summary>Called after each evaluation.</summary>
    public event Action<EvaluationRecord>? Evaluated;

    /// <summary>Called with each epoch's greedy sample.</summary>
    public event Action<SampleRecord>? Sampled;

    /// <summary>Called after each optimizer step (and its evaluation, if any).</summary>
    public event Action<StepProgress>? StepCompleted;

    /// <summary>Polled after every step: return true to stop cleanly at this step boundary (Ctrl+C).</summary>
    public Func<bool>? ShouldStop { get; set; }

    /// <summary>Optimizer steps in one epoch: one per <paramref name="gradAccum"/> batches, a short last group included.</summary>
    public static long StepsPerEpoch(int batches, int gradAccum) => (batches + gradAccum - 1) / gradAccum;

    /// <summary>Trains until every epoch is done, <see cref="TrainingOptions.MaxSteps"/> is reached or <see cref="ShouldStop"/> says so.</summary>
    public TrainingOutcome Run()
    {
        var clock = Stopwatch.StartNew();
        double elapsedBefore = State.ElapsedSeconds;
        long tokensBefore = State.TokensSeen;
        double TokensPerSecond() => clock.Elapsed.TotalSeconds > 0 ? (State.TokensSeen - tokensBefore) / clock.Elapsed.TotalSeconds : 0;

        try
        {
            while (State.Epoch < Options.Epochs)
            {
                _model.Train();
                DataLoaderIterator pass = State.EpochStarted
                    ? _loaders.Train.ResumeEpoch(State.SamplerSeed, State.NextBatch)
                    : _loaders.Train.StartEpoch();
                State.EpochStarted = true;
                State.SamplerSeed = pass.SamplerSeed;
                State.NextBatch = pass.NextBatch;

                while (true)
                {
                    if (Options.MaxSteps is long max && State.GlobalStep + 1 >= max) return TrainingOutcome.MaxStepsReached;
                    long step = State.GlobalStep + 1;
                    long stepStart = Stopwatch.GetTimestamp();
                    TimeSpan fetchesBefore = Timings.DataLoading;
                    _optimizer.ZeroGrad();
                    _parallel.SeedDropout(_model, step); // [distributed]
                    int microBatches = 0;
                    float lastLoss = 0;
                    while (microBatches < Options.GradAccum * _parallel.WorldSize && FetchBatch(pass))
                    {
                        var (input, target) = pass.Current;
                        // [distributed] Every rank walks the whole step's batches (counting all tokens), training on its own block.
                        if (!_parallel.OwnsMicroBatch(microBatches, Options.GradAccum))
                        {
                            State.TokensSeen += input.Count;
                            microBatches++;
                            continue;
                        }
                        Loss loss = Pretraining.CalcLossBatch(input, target, _model);
                        float lossValue = step == FaultNanLossAtStep ? float.NaN : loss.Value;
                        if (!float.IsFinite(lossValue))
                            throw new TrainingDivergedException(string.Create(CultureInfo.InvariantCulture,
                                $"The training loss became {lossValue} at epoch {State.Epoch + 1}, step {step}; stopping (try a lower RunConfig.LearningRate or TrainingOptions.GradClip 1)."));
                        loss.Backward();
                        State.TokensSeen += input.Count;
                        lastLoss = loss.Value;
                        microBatches++;
                    }
                    if (microBatches == 0) break; // the pass is over

                    State.GlobalStep = step;
                    double lr = Schedule.At(step);
                    _optimizer.LearningRate = (float)lr;
                    // Average over the micro-batches, clip, AdamW; [distributed] the ranks' gradients summed first, the update sharded.
                    _parallel.OptimizerStep(_optimizer, microBatches, step >= Options.WarmupSteps ? Options.GradClip : 0);
                    State.NextBatch = pass.NextBatch;
                    Timings.Steps += Stopwatch.GetElapsedTime(stepStart) - (Timings.DataLoading - fetchesBefore);

                    if (step % Options.EvalFreq == 0)
                    {
                        long evalStart = Stopwatch.GetTimestamp();
                        var (trainLoss, valLoss) = _parallel.EvaluateModel(_model, _loaders.Train, _loaders.Validation, Options.EvalIter);
                        Timings.Evaluations += Stopwatch.GetElapsedTime(evalStart);
                        var record = new EvaluationRecord(step, State.Epoch + 1, State.TokensSeen, trainLoss, valLoss, lr, TokensPerSecond());
                        State.Evaluations.Add(record);
                        Evaluated?.Invoke(record);
                    }
                    State.ElapsedSeconds = elapsedBefore + clock.Elapsed.TotalSeconds;
                    StepCompleted?.Invoke(new StepProgress(State.Epoch + 1, step, TotalSteps, lastLoss, lr, State.TokensSeen, TokensPerSecond(), TimeSpan.FromSeconds(State.ElapsedSeconds)));

                    bool maxReached = Options.MaxSteps is long m && State.GlobalStep + 1 >= m;
                    if (maxReached || _parallel.Any(ShouldStop?.Invoke() == true)) // [distributed] all ranks stop at the same step
                    {
                        // Finish the epoch's bookkeeping when this was its last step, so the state is at a clean boundary.
                        if (pass.NextBatch >= pass.Count) EndEpoch();
                        return maxReached ? TrainingOutcome.MaxStepsReached : TrainingOutcome.Stopped;
                    }
                }
                EndEpoch();
            }
            return TrainingOutcome.Completed;
        }
        finally
        {
            State.ElapsedSeconds = elapsedBefore + clock.Elapsed.TotalSeconds;
        }
    }

    private bool FetchBatch(DataLoaderIterator pass)
    {
        long start = Stopwatch.GetTimestamp();
        bool fetched = pass.MoveNext();
        Timings.DataLoading += Stopwatch.GetElapsedTime(start);
        return fetched;
    }

    private void EndEpoch()
    {
        long sampleStart = Stopwatch.GetTimestamp();
        // [distributed] Only rank 0 prints the sample; greedy decoding draws nothing, so the others may skip it.
        string text = _parallel.IsRoot ? Pretraining.GenerateSample(_model, _tokenizer, Options.StartContext, Options.SampleTokens) : "";
        Timings.Samples += Stopwatch.GetElapsedTime(sampleStart);
        var sample = new SampleRecord(State.Epoch + 1, State.GlobalStep, text);
        State.Samples.Add(sample);
        Sampled?.Invoke(sample);
        State.Epoch++;
        State.EpochStarted = false;
        State.SamplerSeed = null;
        State.NextBatch = 0;
    }
}
