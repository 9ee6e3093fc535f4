using System.Threading.Channels;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Randomness;

namespace GptSharp.Generation;

/// <summary>
/// Continuous batching over one <see cref="GptModel"/>: a single decoding thread owns the model and, at every
/// step, runs one batched forward (<see cref="GptModel.ExtendSequences"/>) over every active sequence's own KV
/// cache. Waiting sequences join at step boundaries (a short prompt's rows ride in the step, a long one is prefilled
/// first), finished or cancelled ones leave, and a full waiting queue refuses new work with <see cref="QueueFullException"/>.
/// </summary>
/// <remarks>
/// Each sequence picks its tokens with the <see cref="TokenSampler"/> <see cref="TextGenerator"/> uses (its own logits
/// pipeline and its own seeded generator over the same logits), so a sequence decoded beside others gives the tokens it gives alone.
/// </remarks>
public sealed class BatchScheduler : IDisposable
{
    private readonly GptModel _model;
    private readonly object _gate = new();
    private readonly Queue<Sequence> _waiting = new();
    private readonly List<Sequence> _active = new();
    private readonly List<KvCache> _stepCaches = new();
    private readonly List<Sequence> _prefilling = new();
    // Joiners whose prompts ride in the coming step, and the step's sequences in row order (the decoding ones, then
    // the riders) with the new tokens of each.
    private readonly List<Sequence> _riders = new();
    private readonly List<Sequence> _deferred = new();
    private readonly List<Sequence> _stepSequences = new();
    private readonly int[] _stepCounts, _stepKernelRows;
    private readonly Thread _thread;
    // One row of logits as a sequence's sampler processes it, then its log-probabilities: a row per batch slot, so
    // the sequences of a step pick on all cores at once (each has its own sampler and generator).
    private readonly float[] _work;
    private readonly Action<int> _pickRow;
    private readonly Picked[] _picked;
    private List<Sequence> _picking = new();
    private readonly Tensor _stepLogits;
    private readonly PromptCache? _prompts;
    private int[] _stepIds;
    private bool _stopping;

    /// <param name="promptCachePositions">
    /// Positions of finished sequences' KV caches kept for prompts that begin with the same tokens (<see cref="PromptCache"/>);
    /// null: one context length (one more sequence's KV cache), 0: none.
    /// </param>
    public BatchScheduler(GptModel model, int maxBatchSize = 8, int maxQueueLength = 64, int? promptCachePositions = null)
    {
        if (maxBatchSize < 1) throw new ArgumentException($"maxBatchSize must be at least 1, got {maxBatchSize}.");
        if (maxQueueLength < 0) throw new ArgumentException($"maxQueueLength must be ≥ 0, got {maxQueueLength}.");
        if (promptCachePositions < 0) throw new ArgumentException($"promptCachePositions must be ≥ 0, got {promptCachePositions}.");
        _model = model;
        int kept = promptCachePositions ?? model.Config.ContextLength;
        _prompts = kept > 0 ? new PromptCache(model, kept) : null;
        MaxBatchSize = maxBatchSize;
        MaxQueueLength = maxQueueLength;
        int vocab = model.Config.VocabSize;
        _work = new float[maxBatchSize * vocab];
        _pickRow = PickRow;
        _picked = new Picked[maxBatchSize];
        _stepLogits = new Tensor(maxBatchSize, vocab);
        _stepIds = new int[Math.Max(maxBatchSize, model.ExactStepRows)];
        _stepCounts = new int[maxBatchSize];
        _stepKernelRows = new int[maxBatchSize];
        model.Eval();
        _thread = new Thread(Loop) { IsBackground = true, Name = "GptSharp batch scheduler" };
        _thread.Start();
    }

    public GptConfig Config => _model.Config;

    /// <summary>Most sequences decoded together in one step.</summary>
    public int MaxBatchSize { get; }

    /// <summary>Most sequences waiting for a slot; beyond it <see cref="Submit"/> refuses.</summary>
    public int MaxQueueLength { get; }

    /// <summary>Sequences holding a batch slot: decoding now, or joining at a step boundary.</summary>
    public int ActiveCount { get { lock (_gate) return Decoding(); } }

    /// <summary>Sequences waiting for a slot.</summary>
    public int WaitingCount { get { lock (_gate) return _waiting.Count; } }

    /// <summary>Batched decoding steps run so far.</summary>
    public long Steps { get; private set; }

    /// <summary>The most sequences one step has decoded together.</summary>
    public int LargestStep { get; private set; }

    /// <summary>Prompts read inside a batched step, beside the decoding sequences' rows.</summary>
    public long PromptsInSteps { get; private set; }

    /// <summary>Prompts prefilled on their own (too long to ride in a step).</summary>
    public long PromptsAlone { get; private set; }

    /// <summary>Prompt tokens whose keys and values were copied from an ended sequence instead of computed (<see cref="PromptCache"/>).</summary>
    public long PromptTokensReused { get; private set; }

    /// <summary>
    /// Queues <paramref name="requests"/> (all or none) and returns one handle per sequence; their tokens arrive on
    /// <paramref name="events"/>, tagged with the request's index, each sequence ending with a final event.
    /// Cancelling <paramref name="cancellation"/> (the client went away) ends them within one step.
    /// </summary>
    internal IReadOnlyList<SequenceHandle> Submit(IReadOnlyList<SequenceRequest> requests, ChannelWriter<SequenceEvent> events,
        CancellationToken cancellation = default)
    {
        var sequences = new Sequence[requests.Count];
        for (int i = 0; i < sequences.Length; i++)
        {
            var request = requests[i];
            if (request.PromptIds.Length == 0) throw new ArgumentException("the prompt has no tokens.");
            if (request.PromptIds.Length > Config.ContextLength)
                throw new ArgumentException($"the prompt has {request.PromptIds.Length} tokens, more than the model's context length ({Config.ContextLength}).");
            if (request.MaxNewTokens < 1) throw new ArgumentException($"max_tokens must be at least 1, got {request.MaxNewTokens}.");
            foreach (int id in request.PromptIds)
                if ((uint)id >= (uint)Config.VocabSize) throw new ArgumentException($"token id {id} is outside the vocabulary (0..{Config.VocabSize - 1}).");
            foreach (int id in request.Options.LogitBias?.Keys ?? [])
                if ((uint)id >= (uint)Config.VocabSize) throw new ArgumentException($"logit_bias token id {id} is outside the vocabulary (0..{Config.VocabSize - 1}).");
            sequences[i] = new Sequence(this, i, request, events, cancellation);
        }
        foreach (var s in sequences)
            s.CancellationRegistration = cancellation.Register(static state => ((Sequence)state!).Cancel(), s);
        string? refusal;
        lock (_gate)
        {
            int decoding = Decoding();
            refusal = _stopping ? "the server is shutting down."
                : _waiting.Count + sequences.Length > MaxQueueLength + Math.Max(0, MaxBatchSize - decoding)
                    ? $"the server is busy: {decoding} sequences decoding and {_waiting.Count} waiting (at most {MaxQueueLength}); retry later."
                    : null;
            if (refusal is null)
            {
                foreach (var s in sequences) _waiting.Enqueue(s);
                Monitor.PulseAll(_gate);
                return sequences;
            }
        }
        foreach (var s in sequences) s.Release();
        throw new QueueFullException(refusal);
    }

    /// <summary>
    /// The sequences holding a batch slot that have not ended: active, or being admitted. One that has sent its final
    /// event keeps its slot until the loop's next <see cref="RemoveFinished"/>, but its client may already submit
    /// again: it must not count. Called under the gate.
    /// </summary>
    private int Decoding()
    {
        int decoding = 0;
        foreach (var s in _active) if (!s.Finished) decoding++;
        foreach (var s in _admitted) if (!s.Finished) decoding++;
        return decoding;
    }

    // Sequences taken from the queue and not yet in _active (being admitted, riding in the current step, or waiting for
    // the next one): they hold batch slots, so admission counts them. Changed under the gate.
    private readonly List<Sequence> _admitted = new();

    private void SetAdmitted(List<Sequence> joining, List<Sequence> riders)
    {
        lock (_gate)
        {
            _admitted.Clear();
            _admitted.AddRange(joining);
            _admitted.AddRange(riders);
        }
    }

    /// <summary>Wakes the decoding thread (a sequence was cancelled while it slept).</summary>
    private void Wake()
    {
        lock (_gate) Monitor.PulseAll(_gate);
    }

    private void Loop()
    {
        var joining = new List<Sequence>();
        while (true)
        {
            lock (_gate)
            {
                while (!_stopping && _waiting.Count == 0 && _active.Count == 0 && joining.Count == 0) Monitor.Wait(_gate);
                if (_stopping) break;
                while (_waiting.Count > 0 && _active.Count + joining.Count < MaxBatchSize)
                {
                    var next = _waiting.Dequeue();
                    if (next.IsCancelled) Finish(next, FinishReason.Cancelled);
                    else joining.Add(next);
                }
                SetAdmitted(joining, _riders);
            }
            try
            {
                // Joiners come in at the step boundary: a short prompt rides in this step (or the next) beside the
                // decoding rows, a long one is prefilled alone first; either way its first token comes from the prompt's logits.
                RemoveFinished();
                if (joining.Count > 0) Admit(joining); // leaves in it those that wait for the next step
                SetAdmitted(joining, _riders);
                RemoveFinished();
                if (_active.Count == 0 && _riders.Count == 0) continue;

                _stepSequences.Clear();
                _stepSequences.AddRange(_active);
                _stepSequences.AddRange(_riders);
                _stepCaches.Clear();
                int rows = 0;
                for (int i = 0; i < _stepSequences.Count; i++)
                {
                    var s = _stepSequences[i];
                    _stepCaches.Add(s.Cache!);
                    // A rider's rows: its prompt after the positions its cache already holds (reused ones).
                    bool decoding = s.PromptRows == 0;
                    _stepCounts[i] = decoding ? 1 : s.PromptRows;
                    _stepKernelRows[i] = decoding ? 1 : s.Request.PromptIds.Length; // its kernels: the whole prompt's
                    if (_stepIds.Length < rows + _stepCounts[i]) Array.Resize(ref _stepIds, rows + _stepCounts[i]);
                    if (decoding) _stepIds[rows] = s.LastToken;
                    else s.Request.PromptIds.AsSpan(s.Request.PromptIds.Length - s.PromptRows).CopyTo(_stepIds.AsSpan(rows));
                    rows += _stepCounts[i];
                }
                _model.ExtendSequences(_stepCaches, _stepCounts.AsSpan(0, _stepSequences.Count), _stepIds.AsSpan(0, rows), _stepLogits,
                    _stepKernelRows.AsSpan(0, _stepSequences.Count));
                Steps++;
                LargestStep = Math.Max(LargestStep, _stepSequences.Count);
                lock (_gate)
                {
                    _active.AddRange(_riders);
                    foreach (var s in _riders)
                    {
                        _admitted.Remove(s);
                        s.PromptRows = 0;
                    }
                }
                _riders.Clear();
                PickAll(_stepSequences);
                RemoveFinished();
            }
            catch (Exception e)
            {
                // A failure of the shared forward step ends the sequences in it with an error (those waiting for the next
                // step stay queued); the thread keeps serving.
                foreach (var s in _riders) Finish(s, FinishReason.Failed, e.Message);
                _riders.Clear();
                SetAdmitted(joining, _riders);
                lock (_gate)
                    foreach (var s in _active) Finish(s, FinishReason.Failed, e.Message);
                RemoveFinished();
            }
        }
        lock (_gate)
        {
            foreach (var s in _active.Concat(_waiting).Concat(joining)) Finish(s, FinishReason.Cancelled);
            _waiting.Clear();
        }
        RemoveFinished();
    }

    /// <summary>
    /// Admits the joining sequences in order. A prompt that fits the rows this step has left (up to
    /// <see cref="GptModel.ExactStepRows"/> in all, where every row is computed as alone) rides in the step
    /// (<see cref="_riders"/>): its rows share the step's pass over the weights, and it gets exactly the logits a prefill
    /// alone gives. One that would fit beside a coming step's decoding rows (one for each sequence decoding, admitted
    /// or waiting before it) waits in <paramref name="joining"/> for a later step, at most one step per joiner ahead of
    /// it: a prefill of its own would cost the whole batch more than that wait (docs/serving.md). Any other prompt
    /// is prefilled alone now and its first token picked, one sequence after another, so the first
    /// joiner's token goes out before the next prompt is read. (Prefilling them all in one forward of their own gave no
    /// more tokens/s, a prompt's rows already keep the cores busy, and doubled the median first-token wait at 8
    /// clients: docs/serving.md.)
    /// </summary>
    private void Admit(List<Sequence> joining)
    {
        int exactRows = _model.ExactStepRows;
        int rowsLeft = exactRows - _active.Count;
        // Sequences decoding after this step: those now, plus every joiner admitted here.
        int nextStepRows = _active.Count;
        _deferred.Clear();
        foreach (var s in joining)
        {
            if (s.Finished) continue;
            if (s.IsCancelled) { Finish(s, FinishReason.Cancelled); continue; }
            int[] ids = s.Request.PromptIds;
            // Positions an ended sequence computed for the same leading tokens are copied, not computed again.
            var reuse = _prompts?.Find(ids) ?? default;
            int prompt = ids.Length - reuse.Positions;
            bool rides = prompt <= rowsLeft;
            if (!rides && prompt <= exactRows - (nextStepRows + _deferred.Count + 1))
            {
                _deferred.Add(s);
                continue;
            }
            try
            {
                s.Cache = new KvCache(_model, 1, s.CacheCapacity);
                int reused = _prompts?.CopyInto(reuse, s.Cache) ?? 0;
                PromptTokensReused += reused;
                s.PromptRows = rides ? ids.Length - reused : 0;
                if (!rides)
                {
                    var logits = reused > 0 ? _model.PrefillRest(s.Cache, ids.AsSpan(reused)) : _model.Prefill(s.Cache, ids);
                    logits.Span.CopyTo(_stepLogits.Span);
                }
            }
            catch (Exception e)
            {
                Finish(s, FinishReason.Failed, e.Message);
                continue;
            }
            nextStepRows++;
            if (rides)
            {
                _riders.Add(s);
                PromptsInSteps++;
                rowsLeft -= prompt;
                continue;
            }
            PromptsAlone++;
            // Prefilled alone: it decodes in this step with the others (one row fewer left for riders).
            lock (_gate)
            {
                _active.Add(s);
                _admitted.Remove(s);
            }
            rowsLeft--;
            _prefilling.Clear();
            _prefilling.Add(s);
            PickAll(_prefilling);
        }
        _prefilling.Clear();
        joining.Clear();
        joining.AddRange(_deferred);
        _deferred.Clear();
    }

    /// <summary>
    /// Picks the next token of each sequence from its row of <see cref="_stepLogits"/>, the rows spread over the cores
    /// (each sequence has its own sampler and generator, so a pick does not depend on where it runs), then reports
    /// the picks in row order from this thread: a request's choices share one event channel with a single writer.
    /// </summary>
    private void PickAll(List<Sequence> sequences)
    {
        _picking = sequences;
        Workers.Run(sequences.Count, _pickRow);
        for (int i = 0; i < sequences.Count; i++) Report(sequences[i], _picked[i]);
    }

    /// <summary>One sequence's pick from its row of logits, as <see cref="TextGenerator"/> would pick it; reported later.</summary>
    private void PickRow(int i)
    {
        var s = _picking[i];
        _picked[i] = default;
        if (s.Finished || s.IsCancelled) return;
        int vocab = Config.VocabSize;
        var rowLogits = _stepLogits.Span.Slice(i * vocab, vocab);
        var work = _work.AsSpan(i * vocab, vocab);
        var request = s.Request;
        try
        {
            int token = s.Sampler.Pick(s.History.AsSpan(0, s.Length), request.PromptIds.Length, rowLogits, work);
            float logprob = 0;
            TokenLogprob[]? top = null;
            // The model's own distribution (raw logits), as OpenAI reports it: what the teaching page shows.
            if (request.TopLogprobs >= 0 && token != request.Options.EosId)
                logprob = TokenSampler.LogProbability(rowLogits, token, request.TopLogprobs, work, out top);
            _picked[i] = new Picked(token, logprob, top, null);
        }
        catch (Exception e)
        {
            // A sequence whose sampling fails (its own settings, its own row) ends alone; the batch goes on.
            _picked[i] = new Picked(-1, 0, null, e.Message);
        }
    }

    private static void Report(Sequence s, in Picked picked)
    {
        if (s.Finished) return;
        if (s.IsCancelled) { Finish(s, FinishReason.Cancelled); return; }
        if (picked.Error != null) { Finish(s, FinishReason.Failed, picked.Error); return; }
        var request = s.Request;
        int token = picked.Token;
        s.Generated++;
        if (token == request.Options.EosId) { Finish(s, FinishReason.EndOfSequence); return; }
        s.History[s.Length++] = token;
        s.LastToken = token;
        s.Events.TryWrite(new SequenceEvent(s.Choice, token, picked.Logprob, picked.Top));
        if (s.Generated >= request.MaxNewTokens || s.Length >= s.History.Length) Finish(s, FinishReason.Length);
    }

    private readonly record struct Picked(int Token, float Logprob, TokenLogprob[]? Top, string? Error);

    private static void Finish(Sequence s, FinishReason reason, string? error = null)
    {
        if (s.Finished) return;
        s.Finished = true;
        s.KeepPrompt(reason);
        s.Release();
        s.Events.TryWrite(new SequenceEvent(s.Choice, -1, 0, null, reason, s.Generated, error));
    }

    /// <summary>Frees the slots (and KV caches) of the sequences that ended.</summary>
    private void RemoveFinished()
    {
        lock (_gate)
        {
            for (int i = _active.Count - 1; i >= 0; i--)
            {
                var s = _active[i];
                if (s.IsCancelled && !s.Finished) Finish(s, FinishReason.Cancelled);
                if (!s.Finished) continue;
                s.Release();
                _active.RemoveAt(i);
            }
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_stopping) return;
            _stopping = true;
            Monitor.PulseAll(_gate);
        }
        _thread.Join();
        _stepLogits.Dispose();
        _prompts?.Dispose();
    }

    /// <summary>A sequence in the scheduler: its request, its KV cache, its tokens so far and its sampler.</summary>
    private sealed class Sequence : SequenceHandle
    {
        private readonly BatchScheduler _owner;
        private volatile bool _cancelled;

        public Sequence(BatchScheduler owner, int choice, SequenceRequest request, ChannelWriter<SequenceEvent> events, CancellationToken cancellation)
        {
            _owner = owner;
            Choice = choice;
            Request = request;
            Events = events;
            int context = owner.Config.ContextLength, prompt = request.PromptIds.Length;
            // The last token never enters the cache; a sequence never grows past the context (the caller clamps max_tokens).
            CacheCapacity = (int)Math.Min(context, (long)prompt + request.MaxNewTokens - 1);
            History = new int[CacheCapacity + 1];
            request.PromptIds.CopyTo(History, 0);
            Length = prompt;
            Sampler = new TokenSampler(request.Options, new TorchGenerator(request.Seed));
            _cancelled = cancellation.IsCancellationRequested;
        }

        public readonly int Choice;
        public readonly SequenceRequest Request;
        public readonly ChannelWriter<SequenceEvent> Events;
        public readonly int CacheCapacity;
        public readonly int[] History;
        public readonly TokenSampler Sampler;
        public KvCache? Cache;
        public int Length, Generated, LastToken;
        // Prompt tokens not yet in the cache while the prompt rides in a step; 0 once it has been read.
        public int PromptRows;
        public volatile bool Finished; // set before the final event is written; read by Submit on the client's thread
        public CancellationTokenRegistration CancellationRegistration;

        public bool IsCancelled => _cancelled;

        public override void Cancel()
        {
            if (_cancelled) return;
            _cancelled = true;
            _owner.Wake();
        }

        /// <summary>
        /// Hands an ended sequence's cache to the scheduler's <see cref="PromptCache"/> (on the decoding thread only,
        /// which owns it; a failed step may have left the cache half written).
        /// </summary>
        public void KeepPrompt(FinishReason reason)
        {
            if (Cache is null || reason == FinishReason.Failed || _owner._prompts is null || Thread.CurrentThread != _owner._thread) return;
            if (Cache.Length < Request.PromptIds.Length) return; // the prompt was never read
            _owner._prompts.Keep(Cache, History.AsSpan(0, Cache.Length), Request.PromptIds.Length);
            Cache = null;
        }

        public void Release()
        {
            Cache?.Dispose();
            Cache = null;
            CancellationRegistration.Dispose();
        }
    }
}

/// <summary>A queued or running sequence: <see cref="Cancel"/> ends it at the next step boundary, freeing its slot.</summary>
internal abstract class SequenceHandle
{
    public abstract void Cancel();
}
