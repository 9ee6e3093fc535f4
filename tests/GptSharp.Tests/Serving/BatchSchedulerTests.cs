using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;
using System.Threading.Channels;
using GptSharp.Generation;
using GptSharp.Layers;
using GptSharp.Model;
using GptSharp.Serving;
using GptSharp.Tensors;
using GptSharp.Tokenization;
using GptSharp.Randomness;

namespace GptSharp.Tests.Serving;

/// <summary>Continuous batching: batched decoding equals one-at-a-time decoding, slots are freed, load is served.</summary>
[Collection(ServingCollection.Name)]
public class BatchSchedulerTests(ServingFixture server)
{
    private static async Task<(List<int> Tokens, SequenceEvent Final)> CollectAsync(ChannelReader<SequenceEvent> events)
    {
        var tokens = new List<int>();
        await foreach (var e in events.ReadAllAsync())
        {
            if (e.Finish is not null) return (tokens, e);
            tokens.Add(e.Token);
        }
        throw new InvalidOperationException("the sequence never ended");
    }

    [Fact]
    public async Task ASequenceWhoseSamplingFailsEndsAloneAndTheBatchGoesOn()
    {
        // A library caller's penalty of −float.MaxValue drives a repeated token's logit to +∞, so that sequence's
        // softmax is NaN and its sampler throws on its third token, in the middle of a batch.
        var poison = new GenerationOptions { Temperature = 1f, FrequencyPenalty = -float.MaxValue, EosId = Gpt2Tokenizer.EndOfTextId };
        var settings = new CompletionSettings { MaxTokens = 20, Temperature = 0.8f };
        int[] prompt = Gpt2Tokenizer.Instance.Encode("The victims of a poisoned batch");
        var victims = Enumerable.Range(0, 3).Select(_ => Channel.CreateUnbounded<SequenceEvent>()).ToArray();
        var poisoned = Channel.CreateUnbounded<SequenceEvent>();
        for (int i = 0; i < victims.Length; i++)
            server.Scheduler.Submit([new SequenceRequest(prompt, 20, settings.ToGenerationOptions(), (ulong)(40 + i))], victims[i].Writer);
        server.Scheduler.Submit([new SequenceRequest(prompt, 20, poison, 1)], poisoned.Writer);
        var (_, failed) = await CollectAsync(poisoned.Reader);
        Assert.Equal(FinishReason.Failed, failed.Finish);
        Assert.Contains("Multinomial", failed.Error);
        for (int i = 0; i < victims.Length; i++)
        {
            var (tokens, final) = await CollectAsync(victims[i].Reader);
            Assert.NotEqual(FinishReason.Failed, final.Finish);
            Assert.Equal(server.Reference(prompt, settings, (ulong)(40 + i)), tokens);
        }
    }

    [Fact]
    public void DecodeNextSequencesMatchesDecodeNextPerCache()
    {
        using var model = new GptModel(ServingFixture.Config, new FastRandom(5));
        int vocab = model.Config.VocabSize;
        // A full default batch (8 rows, the skinny GEMM's limit): each row comes out bit for bit as its sequence's
        // own Step, so a sequence decoded beside others gets exactly the logits it gets alone.
        int[][] prompts = [[1, 2, 3], [400, 500], [7, 8, 9, 10, 11, 12], [50256], [5], [6, 60, 600], [70, 7000], [8, 80, 800, 8000]];
        var batched = prompts.Select(p => new KvCache(model, 1, 20)).ToArray();
        var alone = prompts.Select(p => new KvCache(model, 1, 20)).ToArray();
        for (int i = 0; i < prompts.Length; i++)
        {
            model.Prefill(batched[i], prompts[i]);
            model.Prefill(alone[i], prompts[i]);
        }
        using var logits = new Tensor(prompts.Length, vocab);
        int[] next = [11, 22, 33, 44, 55, 66, 77, 88];
        for (int step = 0; step < 3; step++)
        {
            model.DecodeNextSequences(batched, next, logits);
            for (int i = 0; i < prompts.Length; i++)
            {
                var expected = model.DecodeNext(alone[i], next[i]).Span.ToArray();
                var actual = logits.Span.Slice(i * vocab, vocab).ToArray();
                Assert.Equal(expected, actual);
                Assert.Equal(alone[i].Length, batched[i].Length);
            }
            next = next.Select(n => n + 1).ToArray();
        }
        foreach (var c in batched.Concat(alone)) c.Dispose();
    }

    [Fact]
    public void PromptsRidingInAStepGetTheLogitsOfAPrefillAloneAndTheDecodingRowsThoseOfDecodeNext()
    {
        using var model = new GptModel(ServingFixture.Config, new FastRandom(6));
        int vocab = model.Config.VocabSize;
        // Five sequences decoding one token each and three prompts (12 + 9 + 1 tokens) in one step of 27 rows: every
        // row goes through the row-exact GEMM, so each sequence's logits and cache are bit for bit its own.
        int[][] decodingPrompts = [[1, 2, 3], [400, 500], [7, 8, 9, 10, 11, 12], [50256], [5]];
        int[][] newPrompts = [[.. Enumerable.Range(100, 12)], [.. Enumerable.Range(9000, 9)], [42]];
        var batched = decodingPrompts.Concat(newPrompts).Select(_ => new KvCache(model, 1, 30)).ToArray();
        var alone = decodingPrompts.Concat(newPrompts).Select(_ => new KvCache(model, 1, 30)).ToArray();
        for (int i = 0; i < decodingPrompts.Length; i++)
        {
            model.Prefill(batched[i], decodingPrompts[i]);
            model.Prefill(alone[i], decodingPrompts[i]);
        }
        int[] next = [11, 22, 33, 44, 55];
        int[] counts = [.. next.Select(_ => 1), .. newPrompts.Select(p => p.Length)];
        int[] ids = [.. next, .. newPrompts.SelectMany(p => p)];
        Assert.True(ids.Length <= Gemm.RowExactRows);
        using var logits = new Tensor(batched.Length, vocab);
        model.ExtendSequences(batched, counts, ids, logits);
        for (int i = 0; i < batched.Length; i++)
        {
            var expected = i < next.Length
                ? model.DecodeNext(alone[i], next[i]).Span.ToArray()
                : model.Prefill(alone[i], newPrompts[i - next.Length]).Span.ToArray();
            Assert.Equal(expected, logits.Span.Slice(i * vocab, vocab).ToArray());
            Assert.Equal(alone[i].Length, batched[i].Length);
        }
        // The caches hold the same keys and values: the next step, all decoding, still matches.
        int[] following = [.. Enumerable.Range(0, batched.Length).Select(i => 300 + i)];
        model.DecodeNextSequences(batched, following, logits);
        for (int i = 0; i < batched.Length; i++)
            Assert.Equal(model.DecodeNext(alone[i], following[i]).Span.ToArray(), logits.Span.Slice(i * vocab, vocab).ToArray());
        foreach (var c in batched.Concat(alone)) c.Dispose();
    }

    [Fact]
    public void OnAnInt8ModelAStepOfEightRowsWithAPromptRidingMatchesEachSequenceAlone()
    {
        // On int8 weights a step stays row-exact up to the int8 decode kernel's 8 rows (ExactStepRows).
        using var model = new GptModel(ServingFixture.Config, new FastRandom(8));
        model.QuantizeInt8();
        Assert.Equal(8, model.ExactStepRows);
        int vocab = model.Config.VocabSize;
        int[][] decodingPrompts = [[1, 2, 3], [400, 500], [7, 8, 9, 10]];
        int[][] newPrompts = [[77, 78, 79], [5000, 5001]];
        var batched = decodingPrompts.Concat(newPrompts).Select(_ => new KvCache(model, 1, 12)).ToArray();
        var alone = decodingPrompts.Concat(newPrompts).Select(_ => new KvCache(model, 1, 12)).ToArray();
        for (int i = 0; i < decodingPrompts.Length; i++)
        {
            model.Prefill(batched[i], decodingPrompts[i]);
            model.Prefill(alone[i], decodingPrompts[i]);
        }
        int[] next = [11, 22, 33];
        using var logits = new Tensor(batched.Length, vocab);
        model.ExtendSequences(batched, [1, 1, 1, 3, 2], [.. next, .. newPrompts.SelectMany(p => p)], logits);
        for (int i = 0; i < batched.Length; i++)
        {
            var expected = i < next.Length
                ? model.DecodeNext(alone[i], next[i]).Span.ToArray()
                : model.Prefill(alone[i], newPrompts[i - next.Length]).Span.ToArray();
            Assert.Equal(expected, logits.Span.Slice(i * vocab, vocab).ToArray());
        }
        foreach (var c in batched.Concat(alone)) c.Dispose();
    }

    [Theory]
    [InlineData(16, 2)] // the fixture's model: 8 dimensions per head, one vector
    [InlineData(128, 2)] // 64 per head, as GPT-2's: several vectors per dot product and per tile row
    public void ReusedPromptPositionsGiveTheLogitsAndCacheOfAColdPrefill(int embeddingDim, int heads)
    {
        using var model = new GptModel(ServingFixture.Config with { EmbeddingDim = embeddingDim, Heads = heads }, new FastRandom(8));
        int exact = model.ExactStepRows;
        using var prompts = new PromptCache(model, maxPositions: 4 * model.Config.ContextLength);

        // Under 8 tokens a prompt is read as decoded tokens are (dot-product attention): it may take those too.
        int[] tiny = [500, 501, 502, 503];
        Ended(model, prompts, tiny, 10, 77, 78);
        RideAndCompare(model, prompts, [.. tiny, 77, 78, 79], 6);
        // From 8 tokens, by attention tiles: only an earlier such prompt's positions (not its decoded ones), its rest
        // read by the tiles too, even a single row.
        int[] shortPrompt = [.. Enumerable.Range(600, 10)];
        Ended(model, prompts, shortPrompt, 20, 77, 78);
        RideAndCompare(model, prompts, [.. shortPrompt, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86], 10);
        RideAndCompare(model, prompts, [.. shortPrompt, 5, 6, 7], 10);
        RideAndCompare(model, prompts, shortPrompt, 9);

        // Beyond a row-exact step the packed GEMM reads a prompt alone: a longer one that begins with it reuses only its
        // prompt positions and recomputes more than a step's rows, through the same kernels.
        int[] longPrompt = [.. Enumerable.Range(2000, exact + 8)];
        Ended(model, prompts, longPrompt, exact + 12, 5);
        int[] longFollowUp = [.. longPrompt, 5, .. Enumerable.Range(7000, 20)];
        PrefillRestAndCompare(model, prompts, longFollowUp, longFollowUp.Length - exact - 1);

        // Kinds never mix: a short prompt cannot take a long prompt's packed positions, nor a long one a short one's.
        Assert.Equal(0, prompts.Find(longPrompt[..12]).Positions);
        Assert.Equal(0, prompts.Find([.. shortPrompt, .. Enumerable.Range(3000, exact)]).Positions);
        Assert.Equal(0, prompts.Find([.. tiny, 77, 78, 79, 80, 81, 82, 83, 84]).Positions);
    }

    [Fact]
    public void OnAnInt8ModelReusedPromptPositionsGiveTheLogitsOfAColdPrefill()
    {
        // Int8 weights: the row-exact kernel takes up to 8 rows, so a prompt of 9 or more is the packed kind.
        using var model = new GptModel(ServingFixture.Config, new FastRandom(8));
        model.QuantizeInt8();
        int exact = model.ExactStepRows;
        using var prompts = new PromptCache(model, maxPositions: 2 * model.Config.ContextLength);
        // Under 8 tokens, decoded positions too; the rest rides in a step beside a decoding row.
        int[] tiny = [500, 501, 502, 503];
        Ended(model, prompts, tiny, 10, 77);
        RideAndCompare(model, prompts, [.. tiny, 77, 78], 5);
        // 12 tokens: read by the int8 packed GEMM; a follow-up recomputes more than 8 positions, alone.
        int[] longPrompt = [.. Enumerable.Range(2000, 12)];
        Ended(model, prompts, longPrompt, 14);
        int[] longFollowUp = [.. longPrompt, .. Enumerable.Range(7000, 11)];
        Assert.True(longFollowUp.Length - 12 > exact);
        PrefillRestAndCompare(model, prompts, longFollowUp, 12);
    }

    /// <summary>A sequence that read <paramref name="prompt"/>, decoded <paramref name="decoded"/> and ended into <paramref name="prompts"/>.</summary>
    private static void Ended(GptModel model, PromptCache prompts, int[] prompt, int capacity, params int[] decoded)
    {
        var cache = new KvCache(model, 1, capacity);
        model.Prefill(cache, prompt);
        foreach (int token in decoded) model.DecodeNext(cache, token);
        prompts.Keep(cache, [.. prompt, .. decoded], prompt.Length);
    }

    /// <summary>
    /// The rest of <paramref name="prompt"/> after its reused positions rides in a step beside a decoding sequence, as the
    /// scheduler runs it: its logits and cache are a cold prefill's, and the decoding row's its DecodeNext's.
    /// </summary>
    private static void RideAndCompare(GptModel model, PromptCache prompts, int[] prompt, int expectedReuse)
    {
        int vocab = model.Config.VocabSize;
        var match = prompts.Find(prompt);
        Assert.Equal(expectedReuse, match.Positions);
        using var warm = new KvCache(model, 1, 30);
        Assert.Equal(expectedReuse, prompts.CopyInto(match, warm));
        using var other = new KvCache(model, 1, 30);
        using var otherAlone = new KvCache(model, 1, 30);
        model.Prefill(other, [1, 2, 3]);
        model.Prefill(otherAlone, [1, 2, 3]);
        using var logits = new Tensor(2, vocab);
        // Its rest picks its kernels by the whole prompt's length (the kernel rows), as the scheduler passes them.
        model.ExtendSequences([other, warm], [1, prompt.Length - expectedReuse], [9, .. prompt[expectedReuse..]], logits, [1, prompt.Length]);
        using var cold = new KvCache(model, 1, 30);
        Assert.Equal(model.Prefill(cold, prompt).Span.ToArray(), logits.Span.Slice(vocab, vocab).ToArray());
        Assert.Equal(model.DecodeNext(otherAlone, 9).Span.ToArray(), logits.Span.Slice(0, vocab).ToArray());
        AssertSameCache(cold, warm);
    }

    /// <summary>The rest of a long <paramref name="prompt"/> prefilled alone after its reused positions equals a cold prefill.</summary>
    private static void PrefillRestAndCompare(GptModel model, PromptCache prompts, int[] prompt, int expectedReuse)
    {
        var match = prompts.Find(prompt);
        Assert.Equal(expectedReuse, match.Positions);
        using var warm = new KvCache(model, 1, prompt.Length);
        Assert.Equal(expectedReuse, prompts.CopyInto(match, warm));
        var warmLogits = model.PrefillRest(warm, prompt.AsSpan(expectedReuse)).Span.ToArray();
        using var cold = new KvCache(model, 1, prompt.Length);
        Assert.Equal(model.Prefill(cold, prompt).Span.ToArray(), warmLogits);
        AssertSameCache(cold, warm);
    }

    private static unsafe void AssertSameCache(KvCache expected, KvCache actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        int floats = expected.Length * expected.Model.Config.EmbeddingDim;
        for (int layer = 0; layer < expected.Keys.Length; layer++)
        {
            Assert.Equal(new ReadOnlySpan<float>(expected.Keys[layer].Data, floats).ToArray(), new ReadOnlySpan<float>(actual.Keys[layer].Data, floats).ToArray());
            Assert.Equal(new ReadOnlySpan<float>(expected.Values[layer].Data, floats).ToArray(), new ReadOnlySpan<float>(actual.Values[layer].Data, floats).ToArray());
        }
    }

    [Fact]
    public void ThePromptCacheKeepsItsBoundsAndDropsTheLeastRecentlyUsed()
    {
        using var model = new GptModel(ServingFixture.Config, new FastRandom(8));
        using var prompts = new PromptCache(model, maxPositions: 10, maxEntries: 3);
        KvCache Ended(int[] prompt)
        {
            // Sized for 20 positions, as for a long max_tokens: only the prompt's are kept.
            var cache = new KvCache(model, 1, 20);
            model.Prefill(cache, prompt);
            return cache;
        }
        int[] a = [1, 2, 3, 4], b = [5, 6, 7, 8], c = [9, 10, 11, 12];
        prompts.Keep(Ended(a), a, a.Length);
        prompts.Keep(Ended(b), b, b.Length);
        Assert.Equal(8, prompts.Positions);
        // The same tokens again are covered by the kept entry: nothing more is held.
        prompts.Keep(Ended(a), a, a.Length);
        Assert.Equal(8, prompts.Positions);
        // a was used last: c makes room by dropping b.
        using var target = new KvCache(model, 1, 20);
        Assert.Equal(4, prompts.CopyInto(prompts.Find([1, 2, 3, 4, 99]), target));
        prompts.Keep(Ended(c), c, c.Length);
        Assert.Equal(8, prompts.Positions);
        Assert.Equal(3, prompts.Find([1, 2, 3, 4]).Positions);
        Assert.Equal(0, prompts.Find([5, 6, 7, 8]).Positions);
        Assert.Equal(3, prompts.Find([9, 10, 11, 12]).Positions);
        // More positions than the whole budget are not kept.
        int[] longer = [.. Enumerable.Range(100, 12)];
        prompts.Keep(Ended(longer), longer, longer.Length);
        Assert.Equal(0, prompts.Find([.. longer, 1]).Positions);
        Assert.Equal(8, prompts.Positions);
        // At most three entries, however few positions each holds.
        int[][] singles = [[20], [21], [22]];
        foreach (var single in singles) prompts.Keep(Ended(single), single, single.Length);
        Assert.Equal(3, prompts.Positions);
        Assert.Equal(1, prompts.Find([22, 5]).Positions);
        Assert.Equal(0, prompts.Find([1, 2, 3, 4]).Positions);
    }

    [Fact]
    public async Task ARepeatedPromptAndAChatsNextTurnReuseKeptPositionsWithTheSameTokens()
    {
        using var model = new GptModel(ServingFixture.Config, new FastRandom(11));
        using var scheduler = new BatchScheduler(model, maxBatchSize: 8);
        var settings = new CompletionSettings { MaxTokens = 8, Temperature = 0.9f };
        async Task<List<int>> RunAsync(int[] prompt, ulong seed)
        {
            var events = Channel.CreateUnbounded<SequenceEvent>();
            scheduler.Submit([new SequenceRequest(prompt, settings.MaxTokens, settings.ToGenerationOptions(), seed)], events.Writer);
            var (tokens, final) = await CollectAsync(events.Reader);
            Assert.NotEqual(FinishReason.Failed, final.Finish);
            Assert.Equal(server.Reference(prompt, settings, seed), tokens);
            return tokens;
        }
        int[] prompt = Gpt2Tokenizer.Instance.Encode("System: answer briefly. User: Every effort moves you");
        var answer = await RunAsync(prompt, 1);
        Assert.Equal(0, scheduler.PromptTokensReused);
        // The same prompt again: all but its last token are copied.
        Assert.True(Kernels.CachedAttentionTiles(prompt.Length) && prompt.Length <= model.ExactStepRows);
        await RunAsync(prompt, 2);
        Assert.Equal(prompt.Length - 1, scheduler.PromptTokensReused);
        // The next turn sends the conversation so far: the earlier prompt's positions are reused (the answer's were
        // decoded one at a time, by other kernels than this prompt's tiles, so they are computed again).
        int[] nextTurn = [.. prompt, .. answer, .. Gpt2Tokenizer.Instance.Encode(" User: and then?")];
        Assert.True(nextTurn.Length <= model.ExactStepRows);
        await RunAsync(nextTurn, 3);
        Assert.Equal(2 * prompt.Length - 1, scheduler.PromptTokensReused);
        // Off: nothing is kept.
        using var cold = new BatchScheduler(model, maxBatchSize: 8, promptCachePositions: 0);
        var events = Channel.CreateUnbounded<SequenceEvent>();
        cold.Submit([new SequenceRequest(prompt, settings.MaxTokens, settings.ToGenerationOptions(), 2)], events.Writer);
        await CollectAsync(events.Reader);
        events = Channel.CreateUnbounded<SequenceEvent>();
        cold.Submit([new SequenceRequest(prompt, settings.MaxTokens, settings.ToGenerationOptions(), 2)], events.Writer);
        Assert.Equal(server.Reference(prompt, settings, 2), (await CollectAsync(events.Reader)).Tokens);
        Assert.Equal(0, cold.PromptTokensReused);
    }

    [Fact]
    public async Task ShortPromptsRideInTheStepAndLongOnesArePrefilledAloneWithTheSameTokens()
    {
        using var model = new GptModel(ServingFixture.Config, new FastRandom(11));
        using var scheduler = new BatchScheduler(model, maxBatchSize: 8);
        var settings = new CompletionSettings { MaxTokens = 12, Temperature = 0.9f };
        var longRun = new CompletionSettings { MaxTokens = 40, Temperature = 0.9f };
        int[] first = Gpt2Tokenizer.Instance.Encode("A long story begins here and goes on");
        var firstEvents = Channel.CreateUnbounded<SequenceEvent>();
        scheduler.Submit([new SequenceRequest(first, longRun.MaxTokens, longRun.ToGenerationOptions(), 7)], firstEvents.Writer);
        await firstEvents.Reader.WaitToReadAsync(); // decoding now: the next prompts join a running batch
        // Two short prompts fit the step's rows beside the decoding one; a 40-token prompt (more than a step's
        // row-exact rows) does not and is prefilled alone. Every sequence gives the tokens it gives alone.
        int[][] prompts = [Gpt2Tokenizer.Instance.Encode("Hello there"), Gpt2Tokenizer.Instance.Encode("Every effort moves you"), [.. Enumerable.Range(1000, 40)]];
        var channels = prompts.Select(_ => Channel.CreateUnbounded<SequenceEvent>()).ToArray();
        for (int i = 0; i < prompts.Length; i++)
            scheduler.Submit([new SequenceRequest(prompts[i], settings.MaxTokens, settings.ToGenerationOptions(), (ulong)(20 + i))], channels[i].Writer);
        var results = await Task.WhenAll(channels.Select(c => CollectAsync(c.Reader)));
        for (int i = 0; i < prompts.Length; i++)
            Assert.Equal(server.Reference(prompts[i], settings, (ulong)(20 + i)), results[i].Tokens);
        Assert.Equal(server.Reference(first, longRun, 7), (await CollectAsync(firstEvents.Reader)).Tokens);
        Assert.Equal(3, scheduler.PromptsInSteps); // the first (alone in its step) and the two short ones
        Assert.Equal(1, scheduler.PromptsAlone);
    }

    [Fact]
    public async Task BatchedSequencesGiveTheTokensTheyGiveAlone()
    {
        using var model = new GptModel(ServingFixture.Config, new FastRandom(11));
        using var scheduler = new BatchScheduler(model, maxBatchSize: 8);
        var tokenizer = Gpt2Tokenizer.Instance;
        string[] prompts = ["Every effort moves you", "Hello", "The quick brown fox jumps", "A", "Once upon a time there was", "GPT", "1 2 3 4", "Why?"];
        var settings = prompts.Select((p, i) => new CompletionSettings
        {
            MaxTokens = 10 + 3 * i, Temperature = i % 3 == 0 ? 0f : 0.8f + 0.1f * i, TopK = i % 2 == 0 ? 40 : null, TopP = i == 5 ? 0.9f : null,
            FrequencyPenalty = i == 1 ? 0.5f : 0f,
        }).ToArray();
        var channels = prompts.Select(_ => Channel.CreateUnbounded<SequenceEvent>()).ToArray();
        for (int i = 0; i < prompts.Length; i++)
            scheduler.Submit([new SequenceRequest(tokenizer.Encode(prompts[i]), settings[i].MaxTokens, settings[i].ToGenerationOptions(), (ulong)(100 + i))], channels[i].Writer);
        var results = await Task.WhenAll(channels.Select(c => CollectAsync(c.Reader)));
        for (int i = 0; i < prompts.Length; i++)
        {
            var expected = server.Reference(tokenizer.Encode(prompts[i]), settings[i], (ulong)(100 + i));
            Assert.Equal(expected, results[i].Tokens);
            Assert.Equal(expected.Length == settings[i].MaxTokens ? FinishReason.Length : FinishReason.EndOfSequence, results[i].Final.Finish);
        }
        Assert.True(scheduler.LargestStep > 1, "the sequences were never decoded together");
        Assert.Equal(0, scheduler.ActiveCount);
    }

    [Fact]
    public async Task ACancelledSequenceLeavesWithinAStep()
    {
        // A long context and no token limit: the sequence cannot end on its own before the cancellation.
        using var model = new GptModel(ServingFixture.Config with { ContextLength = 1024 }, new FastRandom(11));
        using var scheduler = new BatchScheduler(model, maxBatchSize: 2, maxQueueLength: 0);
        var options = new GenerationOptions { Temperature = 1f };
        using var cancel = new CancellationTokenSource();
        var events = Channel.CreateUnbounded<SequenceEvent>();
        scheduler.Submit([new SequenceRequest([1, 2, 3], int.MaxValue, options, 1)], events.Writer, cancel.Token);
        await events.Reader.ReadAsync(); // the first token: it is decoding
        cancel.Cancel();
        long stepAtCancel = scheduler.Steps;
        var (_, final) = await CollectAsync(events.Reader);
        Assert.Equal(FinishReason.Cancelled, final.Finish);
        Assert.True(scheduler.Steps - stepAtCancel <= 1, $"it took {scheduler.Steps - stepAtCancel} steps to leave");
        // Its slot is free again: two more sequences fit (no queue).
        var more = Channel.CreateUnbounded<SequenceEvent>();
        scheduler.Submit([new SequenceRequest([5], 3, options, 2), new SequenceRequest([6], 3, options, 3)], more.Writer);
    }

    [Fact]
    public async Task AClientMaySubmitAgainAsSoonAsItsSequenceHasEnded()
    {
        // One slot, no queue: the client's next request arrives while the loop may not yet have freed the slot of the
        // sequence whose final event it just read (CI saw a spurious "busy" here). Ended sequences must not count.
        using var model = new GptModel(ServingFixture.Config, new FastRandom(12));
        using var scheduler = new BatchScheduler(model, maxBatchSize: 1, maxQueueLength: 0);
        var options = new GenerationOptions { Temperature = 1f };
        for (int i = 0; i < 1000; i++)
        {
            var events = Channel.CreateUnbounded<SequenceEvent>();
            scheduler.Submit([new SequenceRequest([1, 2, 3], 1 + i % 2, options, (ulong)i)], events.Writer);
            var (_, final) = await CollectAsync(events.Reader);
            Assert.NotEqual(FinishReason.Failed, final.Finish);
        }
    }

    [Fact]
    public async Task EightClientsTimesTwentyFiveRequestsAreAllAnsweredCorrectly()
    {
        const int clients = 8, requestsEach = 25;
        // The answers are checked against the one-at-a-time reference; a few distinct requests keep that cheap.
        string[] prompts = ["Every effort moves you", "Hello there", "In the beginning", "The verdict"];
        var expected = new Dictionary<(int, int), string>();
        for (int p = 0; p < prompts.Length; p++)
            for (int seed = 0; seed < 3; seed++)
                expected[(p, seed)] = server.ReferenceText(prompts[p], new CompletionSettings { MaxTokens = 8, Temperature = 1f }, (ulong)seed);

        await RunLoadAsync(requestsEach: 1); // warm-up: every buffer reaches its size
        GC.Collect();
        GC.WaitForPendingFinalizers();
        long before = GC.GetTotalMemory(forceFullCollection: true);
        var clock = Stopwatch.StartNew();
        int answered = await RunLoadAsync(requestsEach);
        Assert.Equal(clients * requestsEach, answered);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"the load took {clock.Elapsed}");
        // Process-wide: other test classes allocate meanwhile (19 MiB seen once in CI, 64 once in a full local run), so
        // the reading is the least of three a little apart (a leak stays, another test's buffers come and go) and the
        // bound is loose: it catches a leak of more than ~300 KB per request (e.g. each request's logits rows kept
        // alive), not a smaller one.
        long after = long.MaxValue;
        for (int reading = 0; reading < 3; reading++)
        {
            if (reading > 0) await Task.Delay(200);
            GC.Collect();
            GC.WaitForPendingFinalizers();
            after = Math.Min(after, GC.GetTotalMemory(forceFullCollection: true));
        }
        Assert.True(after - before < 64 << 20, $"managed memory grew by {(after - before) >> 20} MiB");
        Assert.Equal(0, server.Scheduler.ActiveCount);
        Assert.Equal(0, server.Scheduler.WaitingCount);

        async Task<int> RunLoadAsync(int requestsEach)
        {
            var counts = await Task.WhenAll(Enumerable.Range(0, clients).Select(async client =>
            {
                int ok = 0;
                for (int r = 0; r < requestsEach; r++)
                {
                    int p = (client + r) % prompts.Length, seed = r % 3;
                    bool stream = r % 2 == 1;
                    string text = stream ? await StreamTextAsync(prompts[p], seed) : await CompleteTextAsync(prompts[p], seed);
                    Assert.Equal(expected[(p, seed)], text);
                    ok++;
                }
                return ok;
            }));
            return counts.Sum();
        }
    }

    private async Task<string> CompleteTextAsync(string prompt, int seed)
    {
        var (status, body) = await server.PostAsync("/v1/completions", new { prompt, max_tokens = 8, seed });
        Assert.Equal(200, status);
        return body.GetProperty("choices")[0].GetProperty("text").GetString()!;
    }

    private async Task<string> StreamTextAsync(string prompt, int seed)
    {
        using var response = await server.Http.PostAsJsonAsync("/v1/completions", new { prompt, max_tokens = 8, seed, stream = true });
        Assert.True(response.IsSuccessStatusCode);
        var text = new System.Text.StringBuilder();
        foreach (string e in (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
        {
            if (e == "data: [DONE]") break;
            foreach (var choice in JsonDocument.Parse(e["data: ".Length..]).RootElement.GetProperty("choices").EnumerateArray())
                text.Append(choice.GetProperty("text").GetString());
        }
        return text.ToString();
    }
}
