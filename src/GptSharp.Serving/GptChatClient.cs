using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.AI;
using GptSharp.Generation;

namespace GptSharp.Serving;

/// <summary>
/// <see cref="IChatClient"/> over a GptSharp model, so a .NET application talks to it as to any other chat model:
/// the messages become a <see cref="ChatTemplate"/> transcript, decoded on the <see cref="BatchScheduler"/> (other
/// callers, the HTTP server included, share its batches). <see cref="ChatOptions"/> map to OpenAI's parameters:
/// Temperature (default 1), TopP, TopK, MaxOutputTokens (default: up to the context length), Seed, StopSequences,
/// FrequencyPenalty, PresencePenalty, and <c>AdditionalProperties["min_p"]</c>.
/// </summary>
public sealed class GptChatClient(BatchScheduler scheduler, string modelId = GptChatClient.DefaultModelId) : IChatClient
{
    public const string DefaultModelId = "gptsharp";

    public ChatClientMetadata Metadata { get; } = new("gptsharp", null, modelId);

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        var (prompt, settings) = Prepare(messages, options);
        var result = await TextCompletion.RunAsync(scheduler, prompt, settings, null, cancellationToken).ConfigureAwait(false);
        var choice = result.Choices[0];
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, choice.Text.TrimStart()))
        {
            ModelId = modelId,
            ResponseId = $"chatcmpl-{Guid.NewGuid():N}",
            CreatedAt = DateTimeOffset.UtcNow,
            FinishReason = ToFinishReason(choice.FinishReason),
            Usage = Usage(result),
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var (prompt, settings) = Prepare(messages, options);
        var pieces = Channel.CreateUnbounded<CompletionPiece>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var run = Task.Run(async () =>
        {
            try
            {
                return await TextCompletion.RunAsync(scheduler, prompt, settings, p => pieces.Writer.WriteAsync(p, stop.Token), stop.Token).ConfigureAwait(false);
            }
            finally { pieces.Writer.TryComplete(); }
        }, stop.Token);
        string responseId = $"chatcmpl-{Guid.NewGuid():N}";
        var trimmer = new LeadingSpaceTrimmer();
        try
        {
            await foreach (var piece in pieces.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                string text = trimmer.Next(piece.Text);
                if (text.Length == 0 && piece.FinishReason is null) continue;
                yield return new ChatResponseUpdate(ChatRole.Assistant, text)
                {
                    ModelId = modelId,
                    ResponseId = responseId,
                    CreatedAt = DateTimeOffset.UtcNow,
                    FinishReason = piece.FinishReason is { } reason ? ToFinishReason(reason) : null,
                };
            }
        }
        finally
        {
            // The consumer stopped early: end the sequence (its slot is freed at the next step).
            stop.Cancel();
        }
        var result = await run.ConfigureAwait(false);
        yield return new ChatResponseUpdate { ModelId = modelId, ResponseId = responseId, Contents = [new UsageContent(Usage(result))] };
    }

    /// <summary>The prompt's ids and the completion settings for a chat (one choice, the chat's stop texts added).</summary>
    private (int[] Prompt, CompletionSettings Settings) Prepare(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        int[] prompt = ChatTemplate.Encode(messages.Select(m => (m.Role.Value, m.Text)));
        float? minP = options?.AdditionalProperties?.TryGetValue("min_p", out object? value) == true ? Convert.ToSingle(value, System.Globalization.CultureInfo.InvariantCulture) : null;
        var settings = new CompletionSettings
        {
            MaxTokens = options?.MaxOutputTokens ?? Math.Max(1, scheduler.Config.ContextLength - prompt.Length + 1),
            Temperature = options?.Temperature ?? 1f,
            TopP = options?.TopP,
            TopK = options?.TopK,
            MinP = minP,
            FrequencyPenalty = options?.FrequencyPenalty ?? 0f,
            PresencePenalty = options?.PresencePenalty ?? 0f,
            Seed = options?.Seed is { } seed ? unchecked((ulong)seed) : null,
            Stop = ChatTemplate.WithChatStops(options?.StopSequences?.ToArray() ?? []),
        };
        return (prompt, settings);
    }

    private static ChatFinishReason ToFinishReason(string reason) => reason == "length" ? ChatFinishReason.Length : ChatFinishReason.Stop;

    private static UsageDetails Usage(CompletionResult result) => new()
    {
        InputTokenCount = result.PromptTokens,
        OutputTokenCount = result.CompletionTokens,
        TotalTokenCount = result.PromptTokens + result.CompletionTokens,
    };

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(ChatClientMetadata) ? Metadata
        : serviceType.IsInstanceOfType(this) ? this
        : serviceType == typeof(BatchScheduler) ? scheduler
        : null;

    /// <summary>The scheduler belongs to whoever made it; nothing to release here.</summary>
    public void Dispose() { }
}
