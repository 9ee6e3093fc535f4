using System.Text;
using System.Threading.Channels;
using GptSharp.Generation;
using GptSharp.Tokenization;

namespace GptSharp.Serving;

/// <summary>How to continue a prompt: OpenAI's sampling parameters, translated to <see cref="GenerationOptions"/>.</summary>
internal sealed record CompletionSettings
{
    public int MaxTokens { get; init; } = 16;
    /// <summary>OpenAI's default is 1 (sampling); 0 = greedy.</summary>
    public float Temperature { get; init; } = 1f;
    public float? TopP { get; init; }
    public int? TopK { get; init; }
    public float? MinP { get; init; }
    public float PresencePenalty { get; init; }
    public float FrequencyPenalty { get; init; }
    /// <summary>OpenAI's <c>logit_bias</c>: token id → value added to its logit; null = none.</summary>
    public IReadOnlyDictionary<int, float>? LogitBias { get; init; }
    /// <summary>Seed of the sampler (choice i uses Seed + i); null = a fresh random seed.</summary>
    public ulong? Seed { get; init; }
    /// <summary>Texts that end a choice; the text is cut exactly before the first one that appears.</summary>
    public IReadOnlyList<string> Stop { get; init; } = [];
    /// <summary>Choices to generate for the prompt (OpenAI's <c>n</c>).</summary>
    public int Choices { get; init; } = 1;
    /// <summary>Alternatives to report per token (−1 = no log-probabilities).</summary>
    public int TopLogprobs { get; init; } = -1;

    /// <summary>The <see cref="GenerationOptions"/> for these settings (GPT-2's <c>&lt;|endoftext|&gt;</c> ends a choice).</summary>
    public GenerationOptions ToGenerationOptions() => new GenerationOptions
    {
        Temperature = Temperature,
        TopK = TopK,
        TopP = TopP,
        MinP = MinP,
        PresencePenalty = PresencePenalty,
        FrequencyPenalty = FrequencyPenalty,
        LogitBias = LogitBias,
        EosId = Gpt2Tokenizer.EndOfTextId,
    }.Validate();
}

/// <summary>A token of a choice with its log-probabilities (when asked for) and where its text starts in the choice.</summary>
internal sealed record CompletionToken(int Id, float Logprob, TokenLogprob[]? Top, int TextOffset);

/// <summary>New text of one choice, as soon as it is known not to be part of a stop text; the last piece has <see cref="FinishReason"/>.</summary>
internal sealed record CompletionPiece(int Choice, string Text, IReadOnlyList<CompletionToken> Tokens, string? FinishReason);

/// <summary>One finished choice: its text (cut before any stop text), why it ended (<c>stop</c> or <c>length</c>), its tokens.</summary>
internal sealed record CompletionChoice(int Index, string Text, string FinishReason, int CompletionTokens, IReadOnlyList<CompletionToken> Tokens);

/// <summary>Every choice of a completion, with the exact token counts of the prompt and of what was generated.</summary>
internal sealed record CompletionResult(int PromptTokens, IReadOnlyList<CompletionChoice> Choices)
{
    public int CompletionTokens => Choices.Sum(c => c.CompletionTokens);
}

/// <summary>
/// Runs a completion on a <see cref="BatchScheduler"/> and turns its tokens into text: whole characters only
/// (<see cref="StreamingDecoder"/>), cut exactly at the first stop text (text that might begin a stop text is held
/// back until it is known not to), and the sequence stopped as soon as a stop text appears.
/// </summary>
internal static class TextCompletion
{
    /// <summary>The prompt's ids (<c>&lt;|endoftext|&gt;</c> allowed, as the book's <c>text_to_token_ids</c>).</summary>
    public static int[] Encode(string prompt) => Gpt2Tokenizer.Instance.Encode(prompt, Gpt2Tokenizer.AllSpecialTokens);

    /// <summary>
    /// Generates <see cref="CompletionSettings.Choices"/> continuations of <paramref name="promptIds"/>, calling
    /// <paramref name="onPiece"/> (when given) with text as it is produced. Throws <see cref="ArgumentException"/>
    /// for a bad setting or a prompt longer than the context, <see cref="QueueFullException"/> when the server is busy.
    /// </summary>
    public static async Task<CompletionResult> RunAsync(BatchScheduler scheduler, int[] promptIds, CompletionSettings settings,
        Func<CompletionPiece, ValueTask>? onPiece = null, CancellationToken cancellation = default)
    {
        if (settings.Choices < 1) throw new ArgumentException($"n must be at least 1, got {settings.Choices}.");
        if (settings.MaxTokens < 1) throw new ArgumentException($"max_tokens must be at least 1, got {settings.MaxTokens}.");
        int context = scheduler.Config.ContextLength;
        if (promptIds.Length == 0) throw new ArgumentException("the prompt is empty: give a text to continue.");
        if (promptIds.Length > context)
            throw new ArgumentException($"the prompt has {promptIds.Length} tokens, more than the model's context length ({context}).");
        foreach (string stop in settings.Stop)
            if (string.IsNullOrEmpty(stop)) throw new ArgumentException("stop texts must not be empty.");
        var options = settings.ToGenerationOptions();
        // Generation ends at the context length (OpenAI's finish_reason "length").
        int maxNew = Math.Min(settings.MaxTokens, context - promptIds.Length + 1);
        ulong seed = settings.Seed ?? (ulong)Random.Shared.NextInt64();
        var requests = new SequenceRequest[settings.Choices];
        for (int i = 0; i < requests.Length; i++)
            requests[i] = new SequenceRequest(promptIds, maxNew, options, unchecked(seed + (ulong)i), settings.TopLogprobs);

        var events = Channel.CreateUnbounded<SequenceEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        var handles = scheduler.Submit(requests, events.Writer, linked.Token);
        var choices = new ChoiceText[requests.Length];
        for (int i = 0; i < choices.Length; i++) choices[i] = new ChoiceText(i, settings.Stop);
        int open = choices.Length;
        try
        {
            while (open > 0)
            {
                var e = await events.Reader.ReadAsync(cancellation).ConfigureAwait(false);
                var choice = choices[e.Choice];
                if (choice.FinishReason is not null) continue;
                CompletionPiece? piece;
                if (e.Finish is { } finish)
                {
                    if (finish == FinishReason.Failed) throw new InvalidOperationException($"generation failed: {e.Error}");
                    piece = choice.End(finish == FinishReason.Length ? "length" : "stop", e.GeneratedTokens);
                }
                else piece = choice.Add(e);
                if (choice.FinishReason is not null)
                {
                    open--;
                    handles[e.Choice].Cancel();
                }
                if (piece is not null && onPiece is not null) await onPiece(piece).ConfigureAwait(false);
            }
        }
        finally
        {
            // Whatever happened (client gone, a callback failed), free the slots at the next step.
            foreach (var h in handles) h.Cancel();
        }
        return new CompletionResult(promptIds.Length, choices.Select(c => c.ToChoice()).ToArray());
    }

    /// <summary>The text of one choice as its tokens arrive: decoding, stop texts and hold-back.</summary>
    internal sealed class ChoiceText(int index, IReadOnlyList<string> stops)
    {
        private readonly StreamingDecoder _decoder = new(Gpt2Tokenizer.Instance);
        private readonly StringBuilder _text = new();
        private readonly List<CompletionToken> _tokens = new();
        private int _emitted, _emittedTokens, _received;

        public string? FinishReason { get; private set; }

        public CompletionPiece? Add(SequenceEvent e)
        {
            _tokens.Add(new CompletionToken(e.Token, e.Logprob, e.Top, _text.Length));
            _received++;
            _text.Append(_decoder.Push(e.Token));
            return Release(final: false, null);
        }

        public CompletionPiece? End(string reason, int generated)
        {
            _text.Append(_decoder.Flush());
            _received = Math.Max(_received, generated);
            return Release(final: true, reason);
        }

        /// <summary>Emits the text that can no longer turn into a stop text; cuts at the first stop text found.</summary>
        private CompletionPiece? Release(bool final, string? reason)
        {
            int cut = -1;
            foreach (string stop in stops)
            {
                // A stop text can only start in the unemitted tail: every text that could begin one was held back.
                int from = _emitted;
                int at = _text.ToString(from, _text.Length - from).IndexOf(stop, StringComparison.Ordinal);
                if (at >= 0 && (cut < 0 || from + at < cut)) cut = from + at;
            }
            int end;
            if (cut >= 0)
            {
                _text.Length = cut;
                end = cut;
                reason = "stop";
                final = true;
            }
            else end = final ? _text.Length : _text.Length - HeldBack();
            if (end < _emitted) end = _emitted;
            string piece = _text.ToString(_emitted, end - _emitted);
            _emitted = end;
            // A piece carries the tokens whose text starts in it (all of them at the end, none past a stop text).
            int count = 0;
            while (_emittedTokens + count < _tokens.Count && ((final && cut < 0) || _tokens[_emittedTokens + count].TextOffset < end)) count++;
            if (cut >= 0) _tokens.RemoveRange(_emittedTokens + count, _tokens.Count - _emittedTokens - count);
            var tokens = _tokens.GetRange(_emittedTokens, count);
            _emittedTokens += tokens.Count;
            if (final) FinishReason = reason;
            return piece.Length == 0 && tokens.Count == 0 && !final ? null : new CompletionPiece(index, piece, tokens, final ? reason : null);
        }

        /// <summary>Length of the longest tail of the text that is the start of some stop text.</summary>
        private int HeldBack()
        {
            int held = 0;
            foreach (string stop in stops)
                for (int k = Math.Min(stop.Length - 1, _text.Length - _emitted); k > held; k--)
                    if (EndsWith(stop.AsSpan(0, k))) { held = k; break; }
            return held;
        }

        private bool EndsWith(ReadOnlySpan<char> prefix)
        {
            int start = _text.Length - prefix.Length;
            for (int i = 0; i < prefix.Length; i++)
                if (_text[start + i] != prefix[i]) return false;
            return true;
        }

        public CompletionChoice ToChoice() => new(index, _text.ToString(), FinishReason ?? "stop", _received, _tokens);
    }
}
